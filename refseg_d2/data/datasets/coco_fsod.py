"""
COCO-FSOD (method-reference 7.2): the 20 novel (VOC) classes of COCO 2017.

Layout (Detectron2's): ``<root>/coco/annotations/instances_{train,val}2017.json``,
``<root>/coco/{train,val}2017/``.

- ``coco_fsod_val_novel``: every val2017 image (5000), ground truth restricted to the 20
  novel classes (``<cache>/coco/fsod_novel_val2017.json``).
- ``coco_fsod_train_novel_{K}shot_seed{S}``, K in 1, 2, 3, 5, 10, 30 and S in 0..99: references
  sampled from train2017 with the authors' sampler
  (``<cache>/coco/fsod_novel_train2017_{K}shot_seed{S}.json``).

Category ids are COCO's; the contiguous class index is the rank of the id (the authors' order).
:func:`register_coco_benchmark` is shared with COCO-20i (``coco20i.py``).
"""
import os
from collections import OrderedDict

from detectron2.data.datasets.builtin_meta import COCO_CATEGORIES

from ...evaluation.ground_truth import register_ground_truth
from .common import cache_root, class_metadata, register_lazy_coco, restricted_json
from .sampling import sampled_references_json

# The 80 COCO thing categories: id -> name, in id order.
COCO_THING_CLASSES = OrderedDict((c["id"], c["name"]) for c in COCO_CATEGORIES if c["isthing"])

NOVEL_IDS = (1, 2, 3, 4, 5, 6, 7, 9, 16, 17, 18, 19, 20, 21, 44, 62, 63, 64, 67, 72)
SHOTS = (1, 2, 3, 5, 10, 30)
SEEDS = tuple(range(100))
# The seeds of the authors' ablation (method-reference 8), in their column order.
PAPER_SEEDS = (42, 13, 27, 36, 88, 33, 69, 55, 77, 99)


def coco_paths(root):
    """The COCO 2017 files under the dataset root."""
    coco = os.path.join(root, "coco")
    return {
        "train_json": os.path.join(coco, "annotations", "instances_train2017.json"),
        "train_images": os.path.join(coco, "train2017"),
        "val_json": os.path.join(coco, "annotations", "instances_val2017.json"),
        "val_images": os.path.join(coco, "val2017"),
    }


def register_coco_benchmark(root, tag, category_ids, test_name, reference_name, shots, seeds,
                            evaluator_type, extra_metadata=None):
    """
    Register a COCO 2017 benchmark over a subset of the 80 classes.

    Args:
        tag (str): prefix of the derived files under ``<cache>/coco/``.
        category_ids (list[int]): the evaluated classes (COCO ids).
        test_name (str): name of the val2017 test dataset.
        reference_name (callable): (shots, seed) -> name of a reference dataset.
        evaluator_type (str or list[str]): metadata evaluator_type of the test dataset.
    """
    paths = coco_paths(root)
    cats = {i: COCO_THING_CLASSES[i] for i in category_ids}
    meta = dict(class_metadata(list(cats), list(cats.values())), **(extra_metadata or {}))
    out_dir = os.path.join(cache_root(root), "coco")

    gt_path = os.path.join(out_dir, "{}_val2017.json".format(tag))

    def test_json(name=test_name):
        return restricted_json(gt_path, paths["val_json"], cats, name)

    register_lazy_coco(
        test_name, test_json, paths["val_images"],
        dict(meta, json_file=gt_path, evaluator_type=evaluator_type),
    )
    register_ground_truth(test_name, test_json)

    for k in shots:
        for seed in seeds:
            register_coco_references(root, tag, category_ids, test_name, reference_name(k, seed),
                                     k, seed, extra_metadata)


def register_coco_references(root, tag, category_ids, test_name, name, shots, seed,
                             extra_metadata=None):
    """Register one reference set of a COCO benchmark: ``shots`` per class, any ``seed``."""
    paths = coco_paths(root)
    cats = {i: COCO_THING_CLASSES[i] for i in category_ids}
    meta = dict(class_metadata(list(cats), list(cats.values())), **(extra_metadata or {}))
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
    return "coco_fsod_train_novel_{}shot_seed{}".format(shots, seed)


def register_coco_fsod(root):
    register_coco_benchmark(
        root, "fsod_novel", NOVEL_IDS, "coco_fsod_val_novel", reference_name, SHOTS, SEEDS,
        "fewshot_coco",
    )


def register_coco_fsod_references(root, shots, seed):
    """Register ``coco_fsod_train_novel_{shots}shot_seed{seed}`` for any shot count and seed."""
    register_coco_references(root, "fsod_novel", NOVEL_IDS, "coco_fsod_val_novel",
                             reference_name(shots, seed), shots, seed)
