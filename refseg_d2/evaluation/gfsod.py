"""
Generalized few-shot COCO AP (gFSOD): COCO AP over all classes plus the same over the base
classes (bAP) and over the novel classes (nAP), as FsDet's ``COCOEvaluator``
(``fsdet/evaluation/coco_evaluation.py``) computes them.
"""
import itertools
import logging

from detectron2.data import MetadataCatalog
from detectron2.evaluation.coco_evaluation import COCOevalMaxDets
from pycocotools.cocoeval import COCOeval

from .coco import RefSegCOCOEvaluator

logger = logging.getLogger(__name__)

# result prefix -> metadata key of the COCO category ids of that part
SPLIT_KEYS = (("b", "base_category_ids"), ("n", "novel_category_ids"))


def evaluate_on_categories(coco_gt, coco_results, iou_type, category_ids, max_dets,
                           img_ids=None):
    """
    COCOeval of ``coco_results`` (dataset category ids) on ``coco_gt`` restricted to
    ``category_ids`` through ``params.catIds`` (every image, the other classes' ground truth and
    detections ignored), as FsDet does for bAP and nAP.

    Args:
        max_dets (list[int]): ``params.maxDets``, e.g. [1, 10, 100].
        img_ids (list or None): ``params.imgIds`` when given.
    Returns:
        COCOeval: evaluated, accumulated and summarised.
    """
    # Copies: loadRes writes into the results (id, area; bbox of masks, dropped for segm so
    # that areas are mask areas, as Detectron2 does).
    drop = ("bbox",) if iou_type == "segm" else ()
    coco_results = [{k: v for k, v in r.items() if k not in drop} for r in coco_results]
    coco_dt = coco_gt.loadRes(coco_results)
    cls = COCOeval if max_dets[2] == 100 else COCOevalMaxDets
    coco_eval = cls(coco_gt, coco_dt, iou_type)
    coco_eval.params.catIds = sorted(category_ids)
    coco_eval.params.maxDets = list(max_dets)
    if img_ids is not None:
        coco_eval.params.imgIds = img_ids
    coco_eval.evaluate()
    coco_eval.accumulate()
    coco_eval.summarize()
    return coco_eval


class GFSODCOCOEvaluator(RefSegCOCOEvaluator):
    """
    :class:`RefSegCOCOEvaluator` (bbox and segm, AP over all classes and ``AP-<class>`` per
    class) whose results also hold, per task, ``bAP``, ``bAP50``, ... over the classes of
    the dataset's metadata ``base_category_ids`` and ``nAP``, ``nAP50``, ... over
    ``novel_category_ids`` (COCO category ids), each from one more COCOeval on the same
    predictions and ground truth with ``catIds`` restricted. All in percent; NaN without
    predictions.
    """

    def __init__(self, dataset_name, **kwargs):
        super().__init__(dataset_name, **kwargs)
        meta = MetadataCatalog.get(dataset_name)
        self._split_ids = {}
        for prefix, key in SPLIT_KEYS:
            ids = meta.get(key, None)
            if not ids:
                raise ValueError(
                    "Dataset {!r} has no metadata {!r} (the COCO category ids of its {} "
                    "classes), needed by the gfsod_coco evaluator".format(
                        dataset_name, key, key.split("_")[0]
                    )
                )
            self._split_ids[prefix] = [int(i) for i in ids]

    def _dataset_results(self, predictions):
        """The predictions as COCO results with dataset category ids (copies)."""
        results = list(itertools.chain(*[x["instances"] for x in predictions]))
        id_map = self._metadata.get("thing_dataset_id_to_contiguous_id", None)
        if not id_map:
            return results
        reverse = {v: k for k, v in id_map.items()}
        return [dict(r, category_id=reverse[r["category_id"]]) for r in results]

    def _eval_predictions(self, predictions, img_ids=None):
        results = self._dataset_results(predictions)
        super()._eval_predictions(predictions, img_ids=img_ids)
        if not self._do_evaluation:
            return
        for task in [t for t in ("bbox", "segm") if t in self._results]:
            for prefix, ids in self._split_ids.items():
                coco_eval = (
                    evaluate_on_categories(self._coco_api, results, task, ids,
                                           self._max_dets_per_image, img_ids)
                    if results else None
                )
                part = self._derive_coco_results(coco_eval, task)
                self._results[task].update((prefix + k, v) for k, v in part.items())
                logger.info("%s %sAP over %d classes: %.3f", task, prefix, len(ids),
                            part["AP"])
