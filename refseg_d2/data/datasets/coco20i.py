"""
COCO-20i few-shot semantic segmentation (the authors'
``scripts/few_shot_coco_semantic_pipeline.sh``), from COCO 2017 instances.

Split s (1..4) holds the 20 classes whose 1-based index in the 80-class list is = s (mod 4)
(the authors' ``coco_semantic_split_s``).

- ``coco20i_split{s}_val``: every val2017 image, ground truth restricted to the split's classes;
  evaluated as instances (COCO AP) and as a semantic map (mIoU, evaluator type
  ``semseg_from_instances``: instance predictions merged, higher score wins, background apart).
- ``coco20i_split{s}_train_{K}shot_seed{S}``: references sampled from train2017 with the
  authors' sampler. Registered on import for K in 1, 5 and the seed of the authors' runs
  (:data:`PAPER_SEED`, 42); any other K and S by name
  (``builtin.register_reference_dataset``).
"""
from .coco_fsod import COCO_THING_CLASSES, register_coco_references, register_coco_test

SPLITS = (1, 2, 3, 4)
SHOTS = (1, 5)
# The seed of the authors' COCO-20i runs: the reference sets registered on import.
PAPER_SEED = 42
# Predictions below this score are not painted into the semantic map (the authors' 0.5).
SEMSEG_SCORE_THRESH = 0.5
EXTRA_METADATA = {"semseg_score_thresh": SEMSEG_SCORE_THRESH}


def split_category_ids(split):
    """The COCO category ids of COCO-20i split ``split`` (1..4)."""
    if split not in SPLITS:
        raise ValueError("COCO-20i split must be one of {}, got {!r}".format(SPLITS, split))
    ids = list(COCO_THING_CLASSES)
    return [ids[i] for i in range(len(ids)) if (i + 1) % 4 == split % 4]


def reference_name(split, shots, seed):
    """The name of the COCO-20i reference set of ``split``, ``shots`` and ``seed``."""
    return "coco20i_split{}_train_{}shot_seed{}".format(split, shots, seed)


def val_name(split):
    """The name of the COCO-20i test set of ``split``."""
    return "coco20i_split{}_val".format(split)


def register_coco20i(root):
    """Register, per split, the test set and the reference sets of :data:`SHOTS` x seed 42."""
    for split in SPLITS:
        register_coco_test(
            root, "coco20i_split{}".format(split), split_category_ids(split), val_name(split),
            ["fewshot_coco", "semseg_from_instances"], EXTRA_METADATA,
        )
        for shots in SHOTS:
            register_coco20i_references(root, split, shots, PAPER_SEED)


def register_coco20i_references(root, split, shots, seed):
    """Register ``coco20i_split{split}_train_{shots}shot_seed{seed}`` for any shots and seed."""
    register_coco_references(
        root, "coco20i_split{}".format(split), split_category_ids(split), val_name(split),
        reference_name(split, shots, seed), shots, seed, EXTRA_METADATA,
    )
