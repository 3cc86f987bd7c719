"""
The benchmark datasets of refseg_d2, registered on import (see ``builtin.py``: the paper's
seeds on import, any other seed by name with ``resolve_datasets`` or
``register_reference_dataset``), and the helpers they are built with.
"""
from . import builtin as _builtin  # noqa: F401  registers the benchmark datasets
from .builtin import register_all, register_reference_dataset, resolve_datasets
from .cdfsod import CDFSOD_DATASETS
from .coco20i import split_category_ids
from .coco_fsod import COCO_THING_CLASSES, NOVEL_IDS, PAPER_SEEDS
from .sampling import is_valid_annotation, picks_to_coco, sample_references
from .voc_fewshot import NOVEL_CLASSES, VOC_CLASSES, voc_to_coco

__all__ = [
    "CDFSOD_DATASETS", "COCO_THING_CLASSES", "NOVEL_CLASSES", "NOVEL_IDS", "PAPER_SEEDS",
    "VOC_CLASSES", "is_valid_annotation", "picks_to_coco", "register_all",
    "register_reference_dataset", "resolve_datasets", "sample_references", "split_category_ids",
    "voc_to_coco",
]
