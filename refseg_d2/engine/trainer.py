"""The Detectron2 trainer of refseg_d2: fills the memory, then evaluates."""
import logging
import os

from detectron2.data import DatasetCatalog, MetadataCatalog, build_detection_test_loader
from detectron2.engine import DefaultTrainer
from detectron2.evaluation import COCOEvaluator, DatasetEvaluators, PascalVOCDetectionEvaluator

from ..data.mappers import RefSegTargetMapper
from .memory_filling import check_image_files, check_memory_matches, ensure_memory, unwrap_model

logger = logging.getLogger(__name__)


class RefSegCOCOEvaluator(COCOEvaluator):
    """COCOEvaluator that skips the segm task when the ground truth has no masks."""

    def __init__(self, dataset_name, tasks=("bbox", "segm"), **kwargs):
        super().__init__(dataset_name, tasks=tasks, **kwargs)
        anns = self._coco_api.dataset.get("annotations", [])
        if "segm" in self._tasks and any(not a.get("segmentation") for a in anns):
            logger.warning(
                "Ground truth of %s has annotations without segmentation: evaluating bbox only",
                dataset_name,
            )
            self._tasks = tuple(t for t in self._tasks if t != "segm")


def _coco_evaluator(cfg, dataset_name, output_folder):
    return RefSegCOCOEvaluator(
        dataset_name,
        output_dir=output_folder,
        use_fast_impl=False,
        max_dets_per_image=cfg.MODEL.REFSEG.MAX_DETECTIONS,
    )


def _voc_evaluator(cfg, dataset_name, output_folder):
    return PascalVOCDetectionEvaluator(dataset_name)


# evaluator_type (dataset metadata) -> factory(cfg, dataset_name, output_folder)
EVALUATOR_FACTORIES = {
    "coco": _coco_evaluator,
    "pascal_voc": _voc_evaluator,
}


class RefSegTrainer(DefaultTrainer):
    """
    Only its class methods are used: RefSeg has no trainable parameter, so there is nothing
    to train and no optimizer to build (``tools/train_net.py`` never constructs it).
    """

    def __init__(self, cfg):
        raise TypeError(
            "RefSeg is training-free: build the model with RefSegTrainer.build_model(cfg) and "
            "run RefSegTrainer.test(cfg, model), which fills the memory first"
        )

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        """Target images squashed by RefSegTargetMapper; missing files fail before inference."""
        dicts = DatasetCatalog.get(dataset_name)
        check_image_files(dicts, "the test dataset {!r}".format(dataset_name))
        return build_detection_test_loader(
            dicts,
            mapper=RefSegTargetMapper(cfg),
            batch_size=cfg.MODEL.REFSEG.ACCEL.IMAGES_PER_BATCH,
            num_workers=cfg.DATALOADER.NUM_WORKERS,
        )

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        if output_folder is None:
            output_folder = os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        types = MetadataCatalog.get(dataset_name).get("evaluator_type", "coco")
        types = types if isinstance(types, (list, tuple)) else [types]
        unknown = [t for t in types if t not in EVALUATOR_FACTORIES]
        if unknown:
            raise ValueError(
                "No evaluator for evaluator_type {} of {}; known: {}".format(
                    unknown, dataset_name, sorted(EVALUATOR_FACTORIES)
                )
            )
        evaluators = [EVALUATOR_FACTORIES[t](cfg, dataset_name, output_folder) for t in types]
        return evaluators[0] if len(evaluators) == 1 else DatasetEvaluators(evaluators)

    @classmethod
    def test(cls, cfg, model, evaluators=None):
        """
        Fill the memory from DATASETS.REFERENCE unless it is loaded, check that it covers the
        categories of every test dataset, then evaluate as DefaultTrainer.test does.
        """
        refseg = unwrap_model(model)
        ensure_memory(cfg, refseg)
        for name in cfg.DATASETS.TEST:
            check_memory_matches(refseg.memory, name)
        refseg.timer.reset()
        results = super().test(cfg, model, evaluators)
        logger.info("Per-stage time: %s", refseg.timer.summary())
        if refseg.cache is not None:
            logger.info("Proposal cache %s: %d hits, %d misses", refseg.cache.dir,
                        refseg.cache.hits, refseg.cache.misses)
        return results
