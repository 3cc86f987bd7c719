"""
COCO-FSOD (the authors' main benchmark): the 20 novel (VOC) classes of COCO 2017.

Layout (Detectron2's): ``<root>/coco/annotations/instances_{train,val}2017.json``,
``<root>/coco/{train,val}2017/``.

- ``coco_fsod_val_novel``: every val2017 image (5000), ground truth restricted to the 20
  novel classes (``<cache>/coco/fsod_novel_val2017.json``).
- ``coco_fsod_train_novel_{K}shot_seed{S}``: references sampled from train2017 with the
  authors' sampler (``<cache>/coco/fsod_novel_train2017_{K}shot_seed{S}.json``). Registered on
  import for K in 1, 2, 3, 5, 10, 30 and the seeds of the paper (:data:`PAPER_SEEDS`); any
  other K and S by name (``builtin.register_reference_dataset``).

Category ids are COCO's; the contiguous class index is the rank of the id (the authors' order).
:func:`register_coco_test` and :func:`register_coco_references` are shared with COCO-20i
(``coco20i.py``).
"""
import os
from collections import OrderedDict

from detectron2.data.datasets.builtin_meta import COCO_CATEGORIES

from ..ground_truth import register_ground_truth
from .common import cache_root, class_metadata, register_lazy_coco, restricted_json
from .sampling import sampled_references_json

# The 80 COCO thing categories: id -> name, in id order.
COCO_THING_CLASSES = OrderedDict((c["id"], c["name"]) for c in COCO_CATEGORIES if c["isthing"])

NOVEL_IDS = (1, 2, 3, 4, 5, 6, 7, 9, 16, 17, 18, 19, 20, 21, 44, 62, 63, 64, 67, 72)
SHOTS = (1, 2, 3, 5, 10, 30)
# The seeds of the authors' ablation (``scripts/ablation_coco_std.sh``), in their column order:
# the reference sets registered on import.
PAPER_SEEDS = (42, 13, 27, 36, 88, 33, 69, 55, 77, 99)
TEST_NAME = "coco_fsod_val_novel"
TAG = "fsod_novel"


def coco_paths(root):
    """The COCO 2017 files under the dataset root."""
    coco = os.path.join(root, "coco")
    return {
        "train_json": os.path.join(coco, "annotations", "instances_train2017.json"),
        "train_images": os.path.join(coco, "train2017"),
        "val_json": os.path.join(coco, "annotations", "instances_val2017.json"),
        "val_images": os.path.join(coco, "val2017"),
    }


def _coco_metadata(category_ids, extra_metadata):
    """({id: name}, metadata) of a COCO benchmark over ``category_ids``."""
    cats = {i: COCO_THING_CLASSES[i] for i in category_ids}
    meta = dict(class_metadata(list(cats), list(cats.values())), **(extra_metadata or {}))
    return cats, meta


def register_coco_test(root, tag, category_ids, test_name, evaluator_type, extra_metadata=None):
    """
    Register the val2017 test set of a COCO 2017 benchmark over a subset of the 80 classes:
    every image, ground truth restricted to ``category_ids`` (``<cache>/coco/<tag>_val2017.json``).

    Args:
        tag (str): prefix of the derived files under ``<cache>/coco/``.
        category_ids (list[int]): the evaluated classes (COCO ids).
        evaluator_type (str or list[str]): metadata evaluator_type of the test set.
    """
    paths = coco_paths(root)
    cats, meta = _coco_metadata(category_ids, extra_metadata)
    gt_path = os.path.join(cache_root(root), "coco", "{}_val2017.json".format(tag))

    def test_json():
        return restricted_json(gt_path, paths["val_json"], cats, test_name)

    register_lazy_coco(
        test_name, test_json, paths["val_images"],
        dict(meta, json_file=gt_path, evaluator_type=evaluator_type),
    )
    register_ground_truth(test_name, test_json)


def register_coco_references(root, tag, category_ids, test_name, name, shots, seed,
                             extra_metadata=None):
    """
    Register ``name``, one reference set of a COCO benchmark: ``shots`` train2017 images per
    class sampled with ``seed`` (any), written at first use to
    ``<cache>/coco/<tag>_train2017_{shots}shot_seed{seed}.json``.
    """
    paths = coco_paths(root)
    cats, meta = _coco_metadata(category_ids, extra_metadata)
    out = os.path.join(
        cache_root(root), "coco", "{}_train2017_{}shot_seed{}.json".format(tag, shots, seed)
    )

    def ref_json():
        return sampled_references_json(out, paths["train_json"], cats, shots, seed, name)

    register_lazy_coco(
        name, ref_json, paths["train_images"],
        dict(meta, json_file=out, shots=shots, seed=seed, reference_of=test_name),
    )


def reference_name(shots, seed):
    """The name of the COCO-FSOD reference set of ``shots`` and ``seed``."""
    return "coco_fsod_train_novel_{}shot_seed{}".format(shots, seed)


def register_coco_fsod(root):
    """
    Register the COCO-FSOD test set and its reference sets of :data:`SHOTS`
    x :data:`PAPER_SEEDS`.
    """
    register_coco_test(root, TAG, NOVEL_IDS, TEST_NAME, "fewshot_coco")
    for shots in SHOTS:
        for seed in PAPER_SEEDS:
            register_coco_fsod_references(root, shots, seed)


def register_coco_fsod_references(root, shots, seed):
    """Register ``coco_fsod_train_novel_{shots}shot_seed{seed}`` for any shot count and seed."""
    register_coco_references(root, TAG, NOVEL_IDS, TEST_NAME, reference_name(shots, seed),
                             shots, seed)
