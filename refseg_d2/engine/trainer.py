"""The Detectron2 trainer of refseg_d2: fills the memory, then evaluates."""
import logging
import os
from collections import OrderedDict

from detectron2.data import DatasetCatalog, build_detection_test_loader
from detectron2.engine import DefaultTrainer
from detectron2.evaluation import DatasetEvaluator, inference_on_dataset, print_csv_format
from detectron2.utils import comm

from ..data.datasets import resolve_datasets
from ..data.mappers import RefSegTargetMapper
from ..evaluation import build_evaluator
from ..utils.distributed import unwrap_model
from .memory_filling import check_image_files, check_memory_matches, ensure_memory

logger = logging.getLogger(__name__)


def load_test_dataset(dataset_name):
    """
    The dataset dicts of a test dataset, loaded once and checked before any model work.

    Raises:
        ValueError: the dataset has no image. FileNotFoundError: image files are missing.
    """
    resolve_datasets([dataset_name])
    dicts = DatasetCatalog.get(dataset_name)
    if not dicts:
        raise ValueError(
            "The test dataset {!r} has no images (its annotation file lists none, or its loader "
            "returned none): nothing to evaluate".format(dataset_name)
        )
    check_image_files(dicts, "the test dataset {!r}".format(dataset_name))
    return dicts


def load_test_datasets(cfg, model):
    """
    The dicts of every DATASETS.TEST dataset (:func:`load_test_dataset`), checked against the
    model's proposal source (``RefSeg.check_targets``). Returns OrderedDict name -> dicts.
    """
    tests = OrderedDict((name, load_test_dataset(name)) for name in cfg.DATASETS.TEST)
    for name, dicts in tests.items():
        model.check_targets(dicts, name)
    return tests


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
    def build_test_loader(cls, cfg, dataset_name, dicts=None):
        """
        Target images squashed by RefSegTargetMapper. ``dicts``: the dataset's dicts from
        :func:`load_test_dataset` (default: loaded and checked now).
        """
        if dicts is None:
            dicts = load_test_dataset(dataset_name)
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
        Load and check every test dataset (once), fill the memory from DATASETS.REFERENCE
        unless it is loaded, check that it covers the categories of every test dataset, then
        evaluate as DefaultTrainer.test does.

        Args:
            evaluators (list[DatasetEvaluator] or None): one per test dataset; None: built
                with :meth:`build_evaluator`.
        Returns:
            dict: the results of the one test dataset, or test dataset -> results.
        """
        refseg = unwrap_model(model)
        tests = load_test_datasets(cfg, refseg)
        if isinstance(evaluators, DatasetEvaluator):
            evaluators = [evaluators]
        if evaluators is not None and len(evaluators) != len(tests):
            raise ValueError("{} evaluators for {} test datasets".format(len(evaluators), len(tests)))
        ensure_memory(cfg, refseg)
        for name in tests:
            check_memory_matches(refseg.memory, name)
        refseg.timer.reset()
        results = OrderedDict()
        for idx, (name, dicts) in enumerate(tests.items()):
            loader = cls.build_test_loader(cfg, name, dicts)
            evaluator = evaluators[idx] if evaluators is not None else cls.build_evaluator(cfg, name)
            results[name] = inference_on_dataset(model, loader, evaluator)
            if comm.is_main_process():
                if not isinstance(results[name], dict):
                    raise TypeError("The evaluator of {} returned {!r}, not a dict".format(
                        name, results[name]))
                logger.info("Evaluation results for %s in csv format:", name)
                print_csv_format(results[name])
        logger.info("Per-stage time: %s", refseg.timer.summary())
        return list(results.values())[0] if len(results) == 1 else results
