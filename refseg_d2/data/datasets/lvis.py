"""
LVIS v1 (the authors' ``scripts/lvis_pipeline.sh``): all 1203 classes, references sampled from
``lvis_v1_train`` with the authors' rules, evaluated on ``lvis_v1_val`` with Detectron2's
LVISEvaluator (federated LVIS AP: AP, APr, APc, APf; bbox and segm).

Layout (Detectron2's): ``<root>/lvis/lvis_v1_{train,val}.json`` (lvisdataset.org) and the COCO
2017 images ``<root>/coco/{train2017,val2017}/``; an image's folder is the one of its
``coco_url`` (LVIS v1 val has images of both). Needs the ``lvis`` package.

- ``lvis_v1_val``: Detectron2's own registration (``register_lvis_instances``: metadata
  ``thing_classes`` from its built-in category list, ``evaluator_type`` "lvis", ``json_file``,
  ``image_root`` ``<root>/coco/``). Detectron2 registers it under ``$DETECTRON2_DATASETS`` when
  it is imported; :func:`register_lvis_v1` registers it again the same way when the benchmark
  root differs, so references and test set come from one root.
- ``lvis_v1_train_{K}shot_seed{S}``: the references, written at first use to
  ``<cache>/lvis/lvis_v1_train_{K}shot_seed{S}.json`` (LVIS format) and loaded with
  Detectron2's ``load_lvis_json`` (class index = category id - 1, as ``lvis_v1_val``).
  Registered on import for K in :data:`SHOTS` and the authors' seed (:data:`PAPER_SEED`, 42,
  ``scripts/lvis_pipeline.sh``); any other K and S by name.

The sampler is the authors' (``few_shot_sampling.py --dataset lvis``: ``remove_bad=False``,
``allow_invalid=True``, ``allow_duplicates=True``; ``sampling.py``). Per class, in the file's
order of first appearance, one shuffle of its annotations, then one valid annotation (not
crowd, box >= 32 px, >= 10 px from the borders) per image until K images. **Rare classes with
fewer than K usable annotations are not an error**: a class with at least one valid annotation
repeats its picks cyclically (first, second, ..., first again) up to K; a class without any
valid annotation takes its first K invalid ones in shuffled order (images may repeat), repeated
the same way when fewer than K. The memory therefore holds exactly K shots of every class,
copies included. A class without any annotation in the file is an error.
"""
import os

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets.lvis import (
    get_lvis_instances_meta, load_lvis_json, register_lvis_instances,
)
from detectron2.data.datasets.lvis_v1_categories import LVIS_CATEGORIES

from ...utils.catalog import unregister
from .common import cache_root
from .sampling import sampled_references_json

SHOTS = (1, 2, 3, 5, 10)
PAPER_SEED = 42
TEST_NAME = "lvis_v1_val"
# The authors' LVIS rules for the sampler.
LVIS_RULES = {"remove_bad": False, "allow_invalid": True, "allow_duplicates": True}
# {id: name} of the 1203 LVIS v1 categories (Detectron2's copy of the official list).
LVIS_V1_CLASSES = {c["id"]: c["name"] for c in sorted(LVIS_CATEGORIES, key=lambda c: c["id"])}


def lvis_paths(root):
    """The LVIS v1 files under the dataset root; the image root ends with a separator."""
    return {
        "train_json": os.path.join(root, "lvis", "lvis_v1_train.json"),
        "val_json": os.path.join(root, "lvis", "lvis_v1_val.json"),
        "image_root": os.path.join(root, "coco", ""),
    }


def register_lvis_v1_val(root):
    """
    Make ``lvis_v1_val`` Detectron2's registration under ``root``: left as it is when it
    already points there, registered again with ``register_lvis_instances`` otherwise.
    Opens no file.
    """
    paths = lvis_paths(root)
    if TEST_NAME in DatasetCatalog.list():
        if MetadataCatalog.get(TEST_NAME).get("json_file", None) == paths["val_json"]:
            return
        unregister(TEST_NAME)
    register_lvis_instances(TEST_NAME, get_lvis_instances_meta(TEST_NAME), paths["val_json"],
                            paths["image_root"])


def reference_name(shots, seed):
    """``lvis_v1_train_{shots}shot_seed{seed}``."""
    return "lvis_v1_train_{}shot_seed{}".format(shots, seed)


def register_lvis_references(root, shots, seed):
    """Register ``lvis_v1_train_{shots}shot_seed{seed}`` for any shot count and seed."""
    paths = lvis_paths(root)
    name = reference_name(shots, seed)
    out = os.path.join(cache_root(root), "lvis",
                       "lvis_v1_train_{}shot_seed{}.json".format(shots, seed))

    def ref_json():
        return sampled_references_json(out, paths["train_json"], LVIS_V1_CLASSES, shots, seed,
                                       name, rules=LVIS_RULES)

    DatasetCatalog.register(name, lambda: load_lvis_json(ref_json(), paths["image_root"], name))
    MetadataCatalog.get(name).set(
        json_file=out, image_root=paths["image_root"], shots=shots, seed=seed,
        reference_of=TEST_NAME, **get_lvis_instances_meta(name)
    )


def register_lvis_v1(root):
    """Register ``lvis_v1_val`` under ``root`` and the references of :data:`SHOTS` x seed 42."""
    register_lvis_v1_val(root)
    for shots in SHOTS:
        register_lvis_references(root, shots, PAPER_SEED)
