"""
Semantic-segmentation mIoU of instance predictions (the COCO-20i protocol of the authors'
``coco_inst_to_segm.py``, without the bugs of their evaluation named at the end).

- Prediction map: every pixel starts as background; the masks of predictions with score >=
  ``score_thresh`` are painted in increasing score order, so a pixel takes the class of the
  highest-scored mask covering it (equal scores: the earlier prediction wins).
- Ground truth: background, then the non-crowd instance masks of the dataset's classes in
  annotation order; pixels of crowd regions that no non-crowd instance covers are ignored.
- Background is its own label (index C), never mixed with a class. Per class c,
  IoU = sum over images of |P=c and G=c| / |P=c or G=c| (ignored pixels excluded); mIoU is the
  mean over the C classes whose union is not empty; background IoU is reported apart.

The authors' script instead paints lower-scored masks last, gives background and the first
class of the 80-class list the same value and scores the first 20 list positions instead of the
split's classes; those numbers are not comparable with these.
"""
import contextlib
import io
import logging
from collections import OrderedDict

import numpy as np
from detectron2.data import MetadataCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.utils import comm
from pycocotools.coco import COCO

from ..data.ground_truth import prepare_ground_truth

logger = logging.getLogger(__name__)

IGNORE_LABEL = 255


def instances_to_semantic(masks, scores, classes, num_classes, score_thresh):
    """
    Args:
        masks: (N, H, W) bool array; scores: (N,) float; classes: (N,) int in [0, C).
        num_classes (int): C; the background label is C.
        score_thresh (float): predictions below it are not painted.
    Returns:
        (H, W) int64 semantic map.
    """
    masks, scores, classes = np.asarray(masks, bool), np.asarray(scores), np.asarray(classes)
    out = np.full(masks.shape[1:], num_classes, dtype=np.int64)
    order = np.argsort(-scores, kind="stable")
    for i in order[::-1]:
        if scores[i] >= score_thresh:
            out[masks[i]] = classes[i]
    return out


def annotations_to_semantic(masks, classes, iscrowd, num_classes, shape):
    """
    Args:
        masks: list of (H, W) bool; classes: list of int in [0, C); iscrowd: list of bool.
        shape: (H, W).
    Returns:
        (H, W) int64 map: class, C (background) or IGNORE_LABEL (crowd only).
    """
    out = np.full(shape, num_classes, dtype=np.int64)
    covered = np.zeros(shape, dtype=bool)
    crowd = np.zeros(shape, dtype=bool)
    for mask, cls, is_crowd in zip(masks, classes, iscrowd):
        if is_crowd:
            crowd |= mask
        else:
            out[mask] = cls
            covered |= mask
    out[crowd & ~covered] = IGNORE_LABEL
    return out


def confusion_matrix(gt, pred, num_labels):
    """(L, L) int64 counts, rows ground truth, columns prediction; IGNORE_LABEL pixels skipped."""
    valid = gt != IGNORE_LABEL
    index = gt[valid] * num_labels + pred[valid]
    return np.bincount(index, minlength=num_labels * num_labels).reshape(num_labels, num_labels)


def semantic_scores(conf, class_names):
    """
    Args:
        conf: (C + 1, C + 1) confusion matrix, background last.
    Returns:
        OrderedDict: mIoU, IoU-background, IoU-<class> (percent; NaN for an empty union).
    """
    conf = conf.astype(np.float64)
    tp = np.diag(conf)
    union = conf.sum(0) + conf.sum(1) - tp
    iou = np.full(len(tp), np.nan)
    np.divide(tp, union, out=iou, where=union > 0)
    res = OrderedDict()
    fg = iou[: len(class_names)]
    res["mIoU"] = float(np.nanmean(fg) * 100) if np.isfinite(fg).any() else float("nan")
    res["IoU-background"] = float(iou[-1] * 100)
    for name, value in zip(class_names, fg):
        res["IoU-" + name] = float(value * 100)
    return res


class InstancesToSemanticEvaluator(DatasetEvaluator):
    """
    mIoU of the instance predictions merged into semantic maps, against the COCO-format ground
    truth of the dataset (``metadata.json_file``, masks required). Results under ``"sem_seg"``.
    """

    def __init__(self, dataset_name, score_thresh=0.5, distributed=True):
        self._dataset_name = dataset_name
        self._score_thresh = score_thresh
        self._distributed = distributed
        json_file = prepare_ground_truth(dataset_name)
        if json_file is None:
            raise ValueError("Dataset {!r} has no json_file metadata".format(dataset_name))
        meta = MetadataCatalog.get(dataset_name)
        self._class_names = list(meta.thing_classes)
        self._id_map = {int(k): v for k, v in meta.thing_dataset_id_to_contiguous_id.items()}
        with contextlib.redirect_stdout(io.StringIO()):
            self._coco = COCO(json_file)

    def reset(self):
        n = len(self._class_names) + 1
        self._conf = np.zeros((n, n), dtype=np.int64)

    def _ground_truth(self, image_id, shape):
        anns = self._coco.imgToAnns.get(image_id, [])
        anns = [a for a in anns if a["category_id"] in self._id_map]
        masks = [self._coco.annToMask(a).astype(bool) for a in anns]
        for a, m in zip(anns, masks):
            if m.shape != shape:
                raise ValueError(
                    "Ground-truth mask of annotation {} of image {} is {}, the prediction is "
                    "{}".format(a.get("id"), image_id, m.shape, shape)
                )
        return annotations_to_semantic(
            masks, [self._id_map[a["category_id"]] for a in anns],
            [bool(a.get("iscrowd", 0)) for a in anns], len(self._class_names), shape,
        )

    def process(self, inputs, outputs):
        for inp, out in zip(inputs, outputs):
            inst = out["instances"].to("cpu")
            shape = tuple(inst.image_size)
            pred = instances_to_semantic(
                inst.pred_masks.numpy(), inst.scores.numpy(), inst.pred_classes.numpy(),
                len(self._class_names), self._score_thresh,
            )
            gt = self._ground_truth(inp["image_id"], shape)
            self._conf += confusion_matrix(gt, pred, len(self._class_names) + 1)

    def evaluate(self):
        conf = self._conf
        if self._distributed:
            parts = comm.all_gather(conf)
            if not comm.is_main_process():
                return None
            conf = np.sum(parts, axis=0)
        res = semantic_scores(conf, self._class_names)
        logger.info("Semantic mIoU of %s: %.2f", self._dataset_name, res["mIoU"])
        return OrderedDict([("sem_seg", res)])
