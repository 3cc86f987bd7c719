"""COCO-style AP of refseg_d2's predictions with Detectron2's COCOEvaluator."""
import logging

from detectron2.evaluation import COCOEvaluator

logger = logging.getLogger(__name__)


class RefSegCOCOEvaluator(COCOEvaluator):
    """
    Detectron2's COCOEvaluator (bbox and segm) that evaluates segm only when every ground-truth
    annotation has a segmentation: one box-only annotation (PASCAL VOC, CD-FSOD boxes) would
    otherwise count as a miss of every mask. Without segm, a warning says so.
    """

    def __init__(self, dataset_name, tasks=("bbox", "segm"), **kwargs):
        super().__init__(dataset_name, tasks=tasks, **kwargs)
        anns = self._coco_api.dataset.get("annotations", [])
        if "segm" in self._tasks and any(not a.get("segmentation") for a in anns):
            logger.warning(
                "Ground truth of %s has annotations without segmentation: evaluating bbox only",
                dataset_name,
            )
            self._tasks = tuple(t for t in self._tasks if t != "segm")
