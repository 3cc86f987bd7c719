"""
Registers the benchmark datasets of refseg_d2 (COCO-FSOD, PASCAL VOC few-shot, CD-FSOD,
COCO-20i) under the dataset root ``$DETECTRON2_DATASETS`` (default ``datasets``), as
Detectron2's own ``builtin.py`` does. Registration opens no file: every file is read, converted
or sampled when its dataset is first used, and a missing one is an error naming its path.

Use it for the benchmarks only; register your own data with ``register_coco_instances`` (or
``tools/train_net.py --register``).
"""
import re

from detectron2.data import DatasetCatalog

from .cdfsod import register_cdfsod
from .coco20i import register_coco20i, register_coco20i_references
from .coco_fsod import register_coco_fsod, register_coco_fsod_references
from .common import datasets_root
from .voc_fewshot import register_voc_fewshot, register_voc_references

# reference dataset name -> register(root, *ints of the name)
_REFERENCE_PATTERNS = (
    (re.compile(r"coco_fsod_train_novel_(\d+)shot_seed(\d+)$"), register_coco_fsod_references),
    (re.compile(r"coco20i_split([1-4])_train_(\d+)shot_seed(\d+)$"), register_coco20i_references),
    (re.compile(r"voc_fewshot_split([1-3])_trainval_novel_(\d+)shot_seed(\d+)$"),
     register_voc_references),
)


def register_all(root):
    """Register every benchmark dataset of refseg_d2 under ``root``."""
    register_coco_fsod(root)
    register_voc_fewshot(root)
    register_cdfsod(root)
    register_coco20i(root)



def register_reference_dataset(name, root=None):
    """
    Register a sampled reference set of any shot count and seed by its name, e.g.
    ``coco_fsod_train_novel_7shot_seed1234`` (the usual shot counts with seeds 0-99 are
    registered on import). A registered name is left as it is.

    Returns:
        str: ``name``.
    """
    if name in DatasetCatalog.list():
        return name
    for pattern, register in _REFERENCE_PATTERNS:
        match = pattern.match(name)
        if match:
            register(root or datasets_root(), *(int(g) for g in match.groups()))
            return name
    raise ValueError(
        "{!r} is not the name of a sampled reference set (patterns: {})".format(
            name, [p.pattern for p, _ in _REFERENCE_PATTERNS]
        )
    )


if __name__.endswith(".builtin"):
    # Registered on import, without reading anything (the path may not exist yet).
    register_all(datasets_root())
