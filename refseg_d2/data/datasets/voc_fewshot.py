"""
PASCAL VOC few-shot (the authors' ``scripts/pascal_split.sh``): splits 1-3, 5 novel classes each.

Layout (Detectron2's): ``<root>/VOC2007/{Annotations,ImageSets/Main,JPEGImages}`` and the same
for ``VOC2012``; optional TFA/FsDet seed files under ``<root>/vocsplit/`` (seed 0) and
``<root>/vocsplit/seed{S}/`` (``box_{K}shot_{class}_train.txt``).

VOC XML is converted to COCO format as the authors' ``pascal_voc_to_coco.py`` does: images in
image-set order (VOC2007 then VOC2012), per image its non-difficult objects then its difficult
ones, box ``[xmin - 1, ymin - 1, xmax - xmin, ymax - ymin]``, difficult objects ``iscrowd = 1``
(ignored by COCOeval, never sampled as references), no masks. The annotation order is theirs,
so the sampler picks the same objects; ids are 1-based (theirs are 0-based: pycocotools treats a
matched ground truth with id 0 as unmatched) and category ids are 1..20 in alphabetical order.

Registered names (K in 1, 2, 3, 5, 10):

- ``voc_0712_trainval_all``, ``voc_2007_test_all``: the converted sets, all 20 classes.
- ``voc_2007_test_novel{s}``: VOC2007 test, ground truth restricted to split s's novel classes,
  evaluated with COCO-style AP (the authors' nAP50 is its AP50) and Detectron2's
  PascalVOCDetectionEvaluator (VOC07 11-point, key ``voc07_bbox``).
- ``voc_2007_test_novel{s}_with_segm``: the same with SAM 2 masks from
  ``<root>/VOC2007/voc07_test_with_segm.json``, for segm AP (made by
  ``tools/add_sam2_masks.py --dataset voc_2007_test_all``).
- ``voc_fewshot_split{s}_trainval_novel_{K}shot_seed{S}``: references sampled from
  VOC2007+2012 trainval with the authors' sampler; registered on import for the seed of their
  runs (:data:`PAPER_SEED`, 33).
- ``voc_tfa_split{s}_novel_{K}shot_seed{S}``: the TFA/FsDet seed files; registered on import
  for seeds 0-9 (:data:`TFA_SEEDS`, our choice of FsDet's usual ten: seed 0, TFA's original
  split in ``vocsplit/``, and ``vocsplit/seed1`` to ``seed9`` of the released ones).

Any other seed (and shot count) of both is registered by name
(``builtin.register_reference_dataset``).
"""
import functools
import os
import xml.etree.ElementTree as ET

import numpy as np

from ..ground_truth import register_ground_truth
from .common import (
    cache_root, class_metadata, derived_json, register_lazy_coco, require_file, restricted_json,
)
from .sampling import sampled_references_json

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)
NOVEL_CLASSES = {
    1: ("bird", "bus", "cow", "motorbike", "sofa"),
    2: ("aeroplane", "bottle", "cow", "horse", "sofa"),
    3: ("boat", "cat", "motorbike", "sheep", "sofa"),
}
SHOTS = (1, 2, 3, 5, 10)
# The seed of the authors' VOC runs: the sampled reference sets registered on import.
PAPER_SEED = 33
# The TFA/FsDet seed file sets registered on import (our choice, FsDet's usual ten): seed 0
# (``vocsplit/``) and seeds 1-9 (``vocsplit/seed{S}/``). Seeds 10-29 are registered by name.
TFA_SEEDS = tuple(range(10))
TRAINVAL_SETS = (("2007", "trainval"), ("2012", "trainval"))
TEST_SETS = (("2007", "test"),)
TRAINVAL_JSON = "voc0712_trainval.json"
TEST_JSON = "voc07_test.json"


def category_id(name):
    """The COCO category id of a VOC class (1..20, alphabetical)."""
    return VOC_CLASSES.index(name) + 1


def novel_categories(split):
    """{category id: name} of the novel classes of ``split``."""
    if split not in NOVEL_CLASSES:
        raise ValueError(
            "VOC split must be one of {}, got {!r}".format(sorted(NOVEL_CLASSES), split)
        )
    return {category_id(n): n for n in NOVEL_CLASSES[split]}


def parse_voc_xml(path):
    """
    Returns:
        (width, height, objects): objects is a list of (name, difficult, [xmin, ymin, xmax,
        ymax]) in file order, coordinates as written (1-based, inclusive).
    """
    require_file(path, "PASCAL VOC annotation")
    root = ET.parse(path).getroot()
    size = root.find("size")
    objects = []
    for obj in root.findall("object"):
        name = obj.find("name").text.strip()
        difficult = obj.find("difficult")
        box = obj.find("bndbox")
        coords = [int(float(box.find(k).text)) for k in ("xmin", "ymin", "xmax", "ymax")]
        objects.append((name, int(difficult.text) if difficult is not None else 0, coords))
    return int(size.find("width").text), int(size.find("height").text), objects


def read_image_set(root, year, split):
    """The image ids of ``VOC<year>/ImageSets/Main/<split>.txt``, in file order."""
    path = os.path.join(root, "VOC" + year, "ImageSets", "Main", split + ".txt")
    with open(require_file(path, "PASCAL VOC{} {} image set".format(year, split))) as f:
        return [line.strip() for line in f if line.strip()]


def _annotation(ann_id, image_id, name, coords, iscrowd):
    """A COCO annotation of a VOC box (1-based inclusive corners), converted as the authors do."""
    x0, y0, x1, y1 = coords
    w, h = x1 - x0, y1 - y0
    return {
        "id": ann_id, "image_id": image_id, "category_id": category_id(name),
        "bbox": [x0 - 1, y0 - 1, w, h], "area": w * h, "iscrowd": iscrowd,
    }


def voc_to_coco(root, sets):
    """COCO dict of VOC image sets [(year, split)], in the authors' conversion order."""
    images, annotations = [], []
    for year, split in sets:
        for file_id in read_image_set(root, year, split):
            xml = os.path.join(root, "VOC" + year, "Annotations", file_id + ".xml")
            width, height, objects = parse_voc_xml(xml)
            image_id = len(images) + 1
            images.append({
                "id": image_id, "width": width, "height": height,
                "file_name": "VOC{}/JPEGImages/{}.jpg".format(year, file_id),
            })
            ordered = [o for o in objects if not o[1]] + [o for o in objects if o[1]]
            for name, difficult, coords in ordered:
                annotations.append(
                    _annotation(len(annotations) + 1, image_id, name, coords, int(bool(difficult)))
                )
    categories = [{"id": category_id(n), "name": n, "supercategory": "none"} for n in VOC_CLASSES]
    return {"images": images, "annotations": annotations, "categories": categories}


def converted_json(root, sets, file_name):
    """Path of the COCO-format conversion of ``sets`` (written at first use)."""
    sources = [
        require_file(
            os.path.join(root, "VOC" + y, "ImageSets", "Main", s + ".txt"),
            "PASCAL VOC{} {} image set".format(y, s),
        )
        for y, s in sets
    ]
    out = os.path.join(cache_root(root), "voc", file_name)
    params = {"sets": [list(s) for s in sets]}
    return derived_json(out, sources, params, lambda: voc_to_coco(root, sets))


def tfa_seed_dir(root, seed):
    """TFA/FsDet seed files: ``vocsplit/`` for seed 0, ``vocsplit/seed{S}/`` otherwise."""
    base = os.path.join(root, "vocsplit")
    return base if seed == 0 else os.path.join(base, "seed{}".format(seed))


def tfa_references(root, split, shots, seed):
    """
    COCO dict of the references of a TFA/FsDet seed file set: every object of class c in the
    images listed by ``box_{K}shot_{c}_train.txt`` (difficult ones included, as FsDet loads
    them); a class with more than K objects keeps K of them chosen by
    ``np.random.RandomState(seed)`` (FsDet subsamples without a seed).
    """
    rng = np.random.RandomState(seed)
    images, annotations, image_ids = [], [], {}
    for name in sorted(NOVEL_CLASSES[split], key=category_id):
        path = os.path.join(tfa_seed_dir(root, seed), "box_{}shot_{}_train.txt".format(shots, name))
        with open(require_file(path, "TFA seed file")) as f:
            file_ids = [os.path.basename(x.strip()).split(".jpg")[0] for x in f if x.strip()]
        found = []
        for file_id in file_ids:
            year = "2012" if "_" in file_id else "2007"
            xml = os.path.join(root, "VOC" + year, "Annotations", file_id + ".xml")
            width, height, objects = parse_voc_xml(xml)
            found.extend((year, file_id, width, height, c) for n, _, c in objects if n == name)
        if len(found) > shots:
            found = [found[i] for i in sorted(rng.choice(len(found), shots, replace=False))]
        for year, file_id, width, height, coords in found:
            if file_id not in image_ids:
                image_ids[file_id] = len(images) + 1
                images.append({
                    "id": image_ids[file_id], "width": width, "height": height,
                    "file_name": "VOC{}/JPEGImages/{}.jpg".format(year, file_id),
                })
            annotations.append(
                _annotation(len(annotations) + 1, image_ids[file_id], name, coords, 0)
            )
    categories = [
        {"id": i, "name": n, "supercategory": "none"}
        for i, n in sorted(novel_categories(split).items())
    ]
    return {"images": images, "annotations": annotations, "categories": categories}


def _voc07_metadata(root, cats):
    """Metadata of a VOC2007 test set over ``cats``: its classes and both evaluators."""
    return dict(
        class_metadata(list(cats), list(cats.values())),
        dirname=os.path.join(root, "VOC2007"), split="test", year=2007,
        evaluator_type=["fewshot_coco", "voc07"],
    )


def _trainval_json(root):
    """Path of VOC2007+2012 trainval in COCO format (written at first use)."""
    return converted_json(root, TRAINVAL_SETS, TRAINVAL_JSON)


def _test_json(root):
    """Path of VOC2007 test in COCO format (written at first use)."""
    return converted_json(root, TEST_SETS, TEST_JSON)


def novel_test_name(split):
    """The name of the VOC2007 test set of ``split``'s novel classes."""
    return "voc_2007_test_novel{}".format(split)


def _with_segm_source(root):
    """The VOC2007 test set with SAM 2 masks, made by ``tools/add_sam2_masks.py``."""
    return os.path.join(root, "VOC2007", "voc07_test_with_segm.json")


def _register_conversions(root):
    """Register ``voc_0712_trainval_all`` and ``voc_2007_test_all`` (all 20 classes)."""
    cache = os.path.join(cache_root(root), "voc")
    all_cats = {category_id(n): n for n in VOC_CLASSES}
    test_meta = dict(_voc07_metadata(root, all_cats), with_segm_json=_with_segm_source(root))
    for name, fn, path, meta in (
        ("voc_0712_trainval_all", _trainval_json, TRAINVAL_JSON, {}),
        ("voc_2007_test_all", _test_json, TEST_JSON, test_meta),
    ):
        meta = dict(class_metadata(list(all_cats), list(all_cats.values())), **meta)
        json_fn = functools.partial(fn, root)
        register_lazy_coco(name, json_fn, root, dict(meta, json_file=os.path.join(cache, path)))
        register_ground_truth(name, json_fn)


def _register_novel_test_sets(root, split):
    """
    Register ``voc_2007_test_novel{split}`` and ``..._with_segm`` (from
    ``VOC2007/voc07_test_with_segm.json``), restricted to the split's novel classes.
    """
    cache = os.path.join(cache_root(root), "voc")
    cats = novel_categories(split)
    for suffix, source in (("", None), ("_with_segm", _with_segm_source(root))):
        name = novel_test_name(split) + suffix
        out = os.path.join(cache, "voc07_test_novel{}{}.json".format(split, suffix))

        def test_json(name=name, out=out, source=source):
            return restricted_json(out, source or _test_json(root), cats, name)

        register_lazy_coco(name, test_json, root, dict(_voc07_metadata(root, cats), json_file=out))
        register_ground_truth(name, test_json)


def register_voc_fewshot(root):
    """
    Register the VOC conversions and, per split, its test sets, the sampled reference sets of
    :data:`SHOTS` x :data:`PAPER_SEED` and the TFA seed file sets of :data:`SHOTS` x
    :data:`TFA_SEEDS`.
    """
    _register_conversions(root)
    for split in NOVEL_CLASSES:
        _register_novel_test_sets(root, split)
        for shots in SHOTS:
            register_voc_references(root, split, shots, PAPER_SEED)
            for seed in TFA_SEEDS:
                register_tfa_references(root, split, shots, seed)


def register_voc_references(root, split, shots, seed):
    """
    Register ``voc_fewshot_split{split}_trainval_novel_{shots}shot_seed{seed}`` (the authors'
    sampler on VOC2007+2012 trainval) for any shot count and seed.
    """
    cats = novel_categories(split)
    name = "voc_fewshot_split{}_trainval_novel_{}shot_seed{}".format(split, shots, seed)
    out = os.path.join(cache_root(root), "voc",
                       "voc0712_trainval_split{}_{}shot_seed{}.json".format(split, shots, seed))

    def ref_json():
        return sampled_references_json(out, _trainval_json(root), cats, shots, seed, name)

    register_lazy_coco(name, ref_json, root, dict(
        class_metadata(list(cats), list(cats.values())), json_file=out, shots=shots, seed=seed,
        reference_of=novel_test_name(split),
    ))


def register_tfa_references(root, split, shots, seed):
    """
    Register ``voc_tfa_split{split}_novel_{shots}shot_seed{seed}`` (:func:`tfa_references` of
    the seed files ``box_{shots}shot_{class}_train.txt`` in :func:`tfa_seed_dir`) for any shot
    count and seed.
    """
    cats = novel_categories(split)
    name = "voc_tfa_split{}_novel_{}shot_seed{}".format(split, shots, seed)
    out = os.path.join(cache_root(root), "voc",
                       "tfa_split{}_{}shot_seed{}.json".format(split, shots, seed))

    def tfa_json():
        folder = tfa_seed_dir(root, seed)
        files = ["box_{}shot_{}_train.txt".format(shots, c) for c in NOVEL_CLASSES[split]]
        sources = [require_file(os.path.join(folder, f), "TFA seed file") for f in files]
        return derived_json(out, sources, {"split": split, "shots": shots, "seed": seed},
                            lambda: tfa_references(root, split, shots, seed))

    register_lazy_coco(name, tfa_json, root, dict(
        class_metadata(list(cats), list(cats.values())), json_file=out, shots=shots, seed=seed,
        reference_of=novel_test_name(split),
    ))
