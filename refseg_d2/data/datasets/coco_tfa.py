"""
The TFA/FsDet COCO few-shot seed files (ucbdrive/few-shot-object-detection,
``datasets/prepare_coco_few_shot.py``), the reference sets of the fine-tuned few-shot detectors'
COCO tables (TFA, DeFRCN, DE-ViT).

Layout (FsDet's, http://dl.yf.io/fs-det/datasets/cocosplit/): ``<root>/cocosplit/`` holds
seed 0 and ``<root>/cocosplit/seed{S}/`` seeds 1-9, each with one file per class and shot
count ``full_box_{K}shot_{class}_trainval.json`` (``{class}`` is the COCO name, spaces kept,
e.g. ``full_box_10shot_dining table_trainval.json``). A file is COCO format: the images picked
for that class from COCO 2014 trainval (``trainvalno5k``) and all their non-crowd annotations
of the class (FsDet picks images until exactly K annotations), the 80 categories. The images
are COCO 2014's: ``COCO_train2014_*.jpg`` in ``<root>/coco/train2014/`` and
``COCO_val2014_*.jpg`` in ``<root>/coco/val2014/`` (Detectron2's layout), or all of them in
FsDet's merged ``<root>/coco/trainval2014/`` when that folder exists.

Registered names, K in :data:`FSDET_SHOTS`, S in :data:`FSDET_SEEDS` (every one on import,
FsDet's full protocol; any other K or S is an error naming the valid ones):

- ``coco_tfa_novel_{K}shot_seed{S}``: the 20 novel classes, test set ``coco_fsod_val_novel``;
- ``coco_tfa_all_{K}shot_seed{S}``: the 80 classes, test set ``coco_gfsod_val_all``.

As FsDet's ``meta_coco.load_coco_json``, every annotation of a class file is one reference
(masks as in the file: box-only ones get SAM 2 masks at the memory filling); a class file
holding more than K annotations keeps K of them drawn by ``np.random.RandomState(S)`` (FsDet
draws them without a seed). Annotation and image ids are the files' (COCO 2014's).
"""
import os

import numpy as np

from .coco_fsod import COCO_THING_CLASSES, NOVEL_IDS, TEST_NAME as NOVEL_TEST_NAME
from .coco_gfsod import GFSOD_TEST_NAME
from .common import (
    cache_root, check_category_ids, class_metadata, derived_json, load_json, register_lazy_coco,
    require_file,
)

FSDET_SHOTS = (1, 2, 3, 5, 10, 30)
FSDET_SEEDS = tuple(range(10))
# split -> (category ids, test set)
SPLITS = {
    "novel": (NOVEL_IDS, NOVEL_TEST_NAME),
    "all": (tuple(COCO_THING_CLASSES), GFSOD_TEST_NAME),
}
_IMAGE_FOLDERS = {"COCO_train2014_": "train2014", "COCO_val2014_": "val2014"}
MERGED_FOLDER = "trainval2014"


def cocosplit_dir(root, seed):
    """FsDet's seed folder: ``cocosplit/`` for seed 0, ``cocosplit/seed{S}/`` otherwise."""
    base = os.path.join(root, "cocosplit")
    return base if seed == 0 else os.path.join(base, "seed{}".format(seed))


def seed_file(root, shots, seed, class_name):
    """The FsDet file of one class, shot count and seed."""
    return os.path.join(
        cocosplit_dir(root, seed), "full_box_{}shot_{}_trainval.json".format(shots, class_name)
    )


def image_folder(file_name, merged):
    """
    The folder under ``<root>/coco`` of a COCO 2014 image: ``trainval2014`` when ``merged``
    (FsDet's layout), else ``train2014`` or ``val2014`` by the file name's prefix.
    """
    for prefix, folder in _IMAGE_FOLDERS.items():
        if os.path.basename(file_name).startswith(prefix):
            return MERGED_FOLDER if merged else folder
    raise ValueError(
        "FsDet seed file image {!r} is no COCO 2014 trainval image (expected a name starting "
        "with {})".format(file_name, " or ".join(_IMAGE_FOLDERS))
    )


def check_protocol(shots, seed):
    """Raise unless ``shots`` and ``seed`` are among FsDet's released files."""
    if shots not in FSDET_SHOTS or seed not in FSDET_SEEDS:
        raise ValueError(
            "The FsDet COCO seed files exist for shots {} and seeds {}-{} only, got {} shots "
            "and seed {}".format(list(FSDET_SHOTS), FSDET_SEEDS[0], FSDET_SEEDS[-1], shots, seed)
        )


def tfa_coco_references(root, category_ids, shots, seed, merged):
    """
    COCO dict of the references of FsDet's seed files for ``category_ids``: per class in id
    order, its file's annotations of the class (images in id order, annotations in file order),
    K of them kept with ``np.random.RandomState(seed)`` when there are more. Image
    ``file_name`` is relative to ``<root>/coco`` (see :func:`image_folder`).
    """
    rng = np.random.RandomState(seed)
    images, annotations = {}, []
    for cat_id in sorted(category_ids):
        name = COCO_THING_CLASSES[cat_id]
        path = seed_file(root, shots, seed, name)
        data = load_json(path, "FsDet COCO seed file")
        check_category_ids(data, {cat_id: name}, path)
        by_id = {img["id"]: img for img in data.get("images", [])}
        found = []
        for image_id in sorted(by_id):
            found.extend(
                (by_id[image_id], a) for a in data.get("annotations", [])
                if a["image_id"] == image_id and a["category_id"] == cat_id
            )
        if not found:
            raise ValueError("{}: no annotation of category {} ({})".format(path, cat_id, name))
        if len(found) > shots:
            found = [found[i] for i in sorted(rng.choice(len(found), shots, replace=False))]
        for img, ann in found:
            if img["id"] not in images:
                folder = image_folder(img["file_name"], merged)
                images[img["id"]] = dict(
                    img, file_name=os.path.join(folder, os.path.basename(img["file_name"]))
                )
            annotations.append(ann)
    categories = [
        {"id": i, "name": COCO_THING_CLASSES[i], "supercategory": "none"}
        for i in sorted(category_ids)
    ]
    return {"images": list(images.values()), "annotations": annotations, "categories": categories}


def reference_name(split, shots, seed):
    """``coco_tfa_{split}_{shots}shot_seed{seed}``."""
    return "coco_tfa_{}_{}shot_seed{}".format(split, shots, seed)


def register_coco_tfa_references(root, split, shots, seed):
    """
    Register ``coco_tfa_{split}_{shots}shot_seed{seed}`` (split "novel" or "all"), written at
    first use to ``<cache>/coco/tfa_{split}_{shots}shot_seed{seed}.json``. Opens no file.

    Raises:
        ValueError: ``shots`` or ``seed`` is not one of FsDet's.
    """
    check_protocol(shots, seed)
    category_ids, test_name = SPLITS[split]
    name = reference_name(split, shots, seed)
    coco = os.path.join(root, "coco")
    out = os.path.join(cache_root(root), "coco",
                       "tfa_{}_{}shot_seed{}.json".format(split, shots, seed))

    def tfa_json():
        sources = [
            require_file(seed_file(root, shots, seed, COCO_THING_CLASSES[i]),
                         "{}: FsDet COCO seed file".format(name))
            for i in sorted(category_ids)
        ]
        merged = os.path.isdir(os.path.join(coco, MERGED_FOLDER))
        params = {"split": split, "shots": shots, "seed": seed, "merged_images": merged}
        return derived_json(out, sources, params,
                            lambda: tfa_coco_references(root, category_ids, shots, seed, merged))

    cats = [COCO_THING_CLASSES[i] for i in category_ids]
    register_lazy_coco(name, tfa_json, coco, dict(
        class_metadata(list(category_ids), cats), json_file=out, shots=shots, seed=seed,
        reference_of=test_name,
    ))


def register_coco_tfa_novel(root, shots, seed):
    """Register ``coco_tfa_novel_{shots}shot_seed{seed}`` (the 20 novel classes)."""
    register_coco_tfa_references(root, "novel", shots, seed)


def register_coco_tfa_all(root, shots, seed):
    """Register ``coco_tfa_all_{shots}shot_seed{seed}`` (the 80 classes)."""
    register_coco_tfa_references(root, "all", shots, seed)


def register_coco_tfa(root):
    """Register every FsDet COCO seed file set: both splits x :data:`FSDET_SHOTS` x seeds 0-9."""
    for split in SPLITS:
        for shots in FSDET_SHOTS:
            for seed in FSDET_SEEDS:
                register_coco_tfa_references(root, split, shots, seed)
