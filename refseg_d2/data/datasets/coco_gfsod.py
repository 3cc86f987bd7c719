"""
Generalized few-shot COCO (gFSOD, the "all classes" tables of TFA/FsDet, DeFRCN and DE-ViT):
all 80 COCO classes in the memory and in the ground truth, AP reported over all classes (AP),
the 60 base classes (bAP) and the 20 novel ones (nAP).

- ``coco_gfsod_val_all``: every val2017 image, all 80 classes
  (``<cache>/coco/gfsod_all_val2017.json``, the val2017 file with its categories checked),
  evaluator type ``gfsod_coco`` (``refseg_d2/evaluation/gfsod.py``); its metadata
  ``base_category_ids`` / ``novel_category_ids`` (COCO ids) define bAP / nAP.
- ``coco_fsod_train_all_{K}shot_seed{S}``: references of the 80 classes sampled from train2017
  with the authors' sampler (their all-classes run, ``coco_allclasses_10shot_Sam2L.yaml``:
  10 shots, seed 33), written at first use to
  ``<cache>/coco/fsod_all_train2017_{K}shot_seed{S}.json``. Registered on import for K in
  1, 2, 3, 5, 10, 30 and the paper seeds (``coco_fsod.PAPER_SEEDS``); any other K and S by name.
- The FsDet seed files of the 80 classes are ``coco_tfa_all_{K}shot_seed{S}`` (``coco_tfa.py``).
"""
from .coco_fsod import (
    COCO_THING_CLASSES, NOVEL_IDS, PAPER_SEEDS, SHOTS, register_coco_references,
    register_coco_test,
)

GFSOD_TEST_NAME = "coco_gfsod_val_all"
ALL_IDS = tuple(COCO_THING_CLASSES)
BASE_IDS = tuple(i for i in ALL_IDS if i not in NOVEL_IDS)
TEST_TAG = "gfsod_all"
REFERENCE_TAG = "fsod_all"


def reference_name(shots, seed):
    """The name of the all-classes sampled reference set of ``shots`` and ``seed``."""
    return "coco_fsod_train_all_{}shot_seed{}".format(shots, seed)


def register_coco_fsod_all_references(root, shots, seed):
    """Register ``coco_fsod_train_all_{shots}shot_seed{seed}`` for any shot count and seed."""
    register_coco_references(root, REFERENCE_TAG, ALL_IDS, GFSOD_TEST_NAME,
                             reference_name(shots, seed), shots, seed)


def register_coco_gfsod(root):
    """Register ``coco_gfsod_val_all`` and its sampled reference sets of the paper seeds."""
    register_coco_test(
        root, TEST_TAG, ALL_IDS, GFSOD_TEST_NAME, "gfsod_coco",
        extra_metadata={"base_category_ids": list(BASE_IDS),
                        "novel_category_ids": list(NOVEL_IDS)},
    )
    for shots in SHOTS:
        for seed in PAPER_SEEDS:
            register_coco_fsod_all_references(root, shots, seed)
