"""
COCO-style AP of refseg_d2's predictions with Detectron2's COCOEvaluator, with a choice of the
COCOeval implementation (``MODEL.REFSEG.EVAL.COCO_IMPL``):

- ``faster_coco_eval`` (default): the maintained C++ drop-in of the ``faster-coco-eval`` package;
- ``pycocotools``: the official Python COCOeval, what the authors evaluate with;
- ``detectron2``: Detectron2's compiled COCOeval (``use_fast_impl``; needs Detectron2's ``_C``,
  otherwise Detectron2 falls back to pycocotools and says so).

The three give the same numbers (the tests compare them on synthetic data to 1e-9); the last
two are faster on large test sets (a 60-run sweep over COCO val).
"""
import contextlib
import logging

from detectron2.evaluation import COCOEvaluator
from detectron2.evaluation import coco_evaluation

from ..config import declare_choices

logger = logging.getLogger(__name__)

COCO_IMPLS = declare_choices("EVAL.COCO_IMPL", ("faster_coco_eval", "pycocotools", "detectron2"))


@contextlib.contextmanager
def _cocoeval_class(cls):
    """
    Make Detectron2's evaluator use ``cls`` as its fast COCOeval inside the block: it picks
    ``coco_evaluation.COCOeval_opt`` when ``use_fast_impl`` is on, with no other way to pass a
    COCOeval class in.
    """
    previous = coco_evaluation.COCOeval_opt
    coco_evaluation.COCOeval_opt = cls
    try:
        yield
    finally:
        coco_evaluation.COCOeval_opt = previous


class RefSegCOCOEvaluator(COCOEvaluator):
    """
    Detectron2's COCOEvaluator (bbox and segm) that evaluates segm only when every ground-truth
    annotation has a segmentation: one box-only annotation (PASCAL VOC, CD-FSOD boxes) would
    otherwise count as a miss of every mask. Without segm, a warning says so.
    """

    def __init__(self, dataset_name, tasks=("bbox", "segm"), coco_impl="pycocotools", **kwargs):
        """
        Args:
            coco_impl (str): one of :data:`COCO_IMPLS`.
            kwargs: of Detectron2's COCOEvaluator (``use_fast_impl`` is set by ``coco_impl``).
        """
        if coco_impl not in COCO_IMPLS:
            raise ValueError("MODEL.REFSEG.EVAL.COCO_IMPL must be one of {}, got {!r}".format(
                COCO_IMPLS, coco_impl))
        if coco_impl == "faster_coco_eval":
            try:
                import faster_coco_eval  # noqa: F401
            except ImportError as e:
                raise ImportError(
                    "MODEL.REFSEG.EVAL.COCO_IMPL 'faster_coco_eval' needs the faster-coco-eval "
                    "package: pip install faster-coco-eval, or set MODEL.REFSEG.EVAL.COCO_IMPL "
                    "pycocotools") from e
        kwargs["use_fast_impl"] = coco_impl != "pycocotools"
        super().__init__(dataset_name, tasks=tasks, **kwargs)
        self._coco_impl = coco_impl
        if coco_impl == "faster_coco_eval":
            self._use_fast_impl = True   # Detectron2 turns it off when its own _C is not built
        anns = self._coco_api.dataset.get("annotations", [])
        if "segm" in self._tasks and any(not a.get("segmentation") for a in anns):
            logger.warning(
                "Ground truth of %s has annotations without segmentation: evaluating bbox only",
                dataset_name,
            )
            self._tasks = tuple(t for t in self._tasks if t != "segm")

    def _eval_predictions(self, predictions, img_ids=None):
        if self._coco_impl != "faster_coco_eval":
            return super()._eval_predictions(predictions, img_ids=img_ids)
        from faster_coco_eval import COCOeval_faster

        with _cocoeval_class(COCOeval_faster):
            return super()._eval_predictions(predictions, img_ids=img_ids)
