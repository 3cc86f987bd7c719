"""
The benchmark datasets of refseg_d2 (and the fine-tuned baselines' protocols: FsDet COCO seed
files, gFSOD, LVIS v1), registered on import (see ``builtin.py``: the paper's
seeds on import, any other seed by name with ``resolve_datasets`` or
``register_reference_dataset``), and the helpers they are built with.
"""
from . import builtin as _builtin  # noqa: F401  registers the benchmark datasets
from .builtin import register_all, register_reference_dataset, resolve_datasets, unregistered
from .cdfsod import CDFSOD_DATASETS
from .coco20i import split_category_ids
from .coco_fsod import COCO_THING_CLASSES, NOVEL_IDS, PAPER_SEEDS
from .coco_gfsod import BASE_IDS
from .coco_tfa import FSDET_SEEDS, FSDET_SHOTS
from .lvis import LVIS_V1_CLASSES
from .sampling import is_valid_annotation, picks_to_coco, sample_references
from .voc_fewshot import NOVEL_CLASSES, VOC_CLASSES, voc_to_coco

__all__ = [
    "BASE_IDS", "CDFSOD_DATASETS", "COCO_THING_CLASSES", "FSDET_SEEDS", "FSDET_SHOTS",
    "LVIS_V1_CLASSES", "NOVEL_CLASSES", "NOVEL_IDS", "PAPER_SEEDS", "VOC_CLASSES",
    "is_valid_annotation", "picks_to_coco", "register_all", "register_reference_dataset",
    "resolve_datasets", "sample_references", "split_category_ids", "unregistered", "voc_to_coco",
]
