"""The Detectron2 trainer of refseg_d2: fills the memory, then evaluates."""
import logging
import os

from detectron2.data import DatasetCatalog, build_detection_test_loader
from detectron2.engine import DefaultTrainer

from ..data.datasets import resolve_datasets
from ..data.mappers import RefSegTargetMapper
from ..evaluation import build_evaluator
from .memory_filling import check_image_files, check_memory_matches, ensure_memory, unwrap_model

logger = logging.getLogger(__name__)


def check_test_dataset(dataset_name):
    """Raise, before any model work, when a test dataset has no image or missing image files."""
    resolve_datasets([dataset_name])
    dicts = DatasetCatalog.get(dataset_name)
    if not dicts:
        raise ValueError(
            "The test dataset {!r} has no images (its annotation file lists none, or its loader "
            "returned none): nothing to evaluate".format(dataset_name)
        )
    check_image_files(dicts, "the test dataset {!r}".format(dataset_name))


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
        resolve_datasets([dataset_name])
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
        return build_evaluator(cfg, dataset_name, output_folder)

    @classmethod
    def test(cls, cfg, model, evaluators=None):
        """
        Fill the memory from DATASETS.REFERENCE unless it is loaded, check that it covers the
        categories of every test dataset, then evaluate as DefaultTrainer.test does.
        """
        refseg = unwrap_model(model)
        for name in cfg.DATASETS.TEST:
            check_test_dataset(name)
        ensure_memory(cfg, refseg)
        for name in cfg.DATASETS.TEST:
            check_memory_matches(refseg.memory, name)
        refseg.timer.reset()
        results = super().test(cfg, model, evaluators)
        logger.info("Per-stage time: %s", refseg.timer.summary())
        return results
