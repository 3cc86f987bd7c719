"""
The authors' few-shot reference sampler (``few_shot_sampling.py`` and
``data_utils.is_valid_annotation`` of no-time-to-train), reproduced exactly: the same COCO file
and seed give the same references.

The algorithm:

1. ``random.seed(seed)`` once (Python's Mersenne Twister; here a ``random.Random(seed)``, the
   same stream).
2. Walk the annotations in the order of ``pycocotools.COCO(...).anns`` (JSON order; a repeated
   annotation id keeps its first position and its last value) and group ``(image_id, ann_id)``
   pairs of the wanted categories per category, categories in order of first appearance.
   Annotations with ``isimpossible == 1`` are dropped (``remove_bad``).
3. For each category in that order: shuffle its list, walk it, skip invalid annotations
   (:func:`is_valid_annotation`) and images already taken for this category, and take one
   annotation per image until ``shots`` images are taken.
4. Too few valid annotations is an error. So is, here, a wanted category without any
   annotation (the authors' code silently leaves it out, and its memory would lack the class).

LVIS (the authors' ``--dataset lvis``: ``remove_bad=False``, ``allow_invalid=True``,
``allow_duplicates=True``) relaxes step 4 for rare classes:

- a class with no valid annotation takes the first ``shots`` of its invalid ones in shuffled
  order (``allow_invalid``; images may repeat);
- a class with fewer than ``shots`` picks then repeats them cyclically, first, second, ...,
  first again, until it has ``shots`` (``allow_duplicates``); the copies are distinct
  annotations of the written file (:func:`picks_to_coco`), so each is one shot of the memory.
- a class with some valid annotations but fewer than ``shots`` ignores its invalid ones;
- a class without any annotation is still an error (the authors' code fails on it too).
"""
import random
from collections import OrderedDict

from .common import check_category_ids, derived_json, load_json, require_file

MIN_BOX_SIDE = 32
MIN_BORDER_DISTANCE = 10


def is_valid_annotation(ann, image):
    """
    The authors' validity rule: not crowd, box at least 32 x 32, and at least 10 px away from
    every image border (COCO XYWH box, image ``width``/``height``).
    """
    if ann.get("iscrowd", 0) == 1:
        return False
    x, y, w, h = ann["bbox"][:4]
    if w < MIN_BOX_SIDE or h < MIN_BOX_SIDE:
        return False
    if (
        x < MIN_BORDER_DISTANCE
        or y < MIN_BORDER_DISTANCE
        or image["width"] - (x + w) < MIN_BORDER_DISTANCE
        or image["height"] - (y + h) < MIN_BORDER_DISTANCE
    ):
        return False
    return True


def _coco_index(data):
    """``anns`` and ``imgs`` as pycocotools builds them (dict insertion order, last value wins)."""
    anns, imgs = {}, {}
    for ann in data.get("annotations", []):
        anns[ann["id"]] = ann
    for img in data.get("images", []):
        imgs[img["id"]] = img
    return anns, imgs


def sample_references(data, category_ids, shots, seed, remove_bad=True, source="<dict>",
                      allow_invalid=False, allow_duplicates=False):
    """
    Args:
        data (dict): a COCO-format dict (e.g. instances_train2017.json loaded).
        category_ids (iterable[int]): the categories to sample.
        shots (int): images (one annotation each) per category.
        seed (int): the seed of ``random.seed``.
        remove_bad (bool): drop annotations with ``isimpossible == 1``.
        source (str): named in errors.
        allow_invalid (bool): a class without a valid annotation takes its invalid ones
            (the authors' LVIS rule, see the module docstring).
        allow_duplicates (bool): a class with fewer than ``shots`` picks repeats them
            cyclically up to ``shots`` instead of being an error (LVIS).
    Returns:
        OrderedDict: category id -> list of ``shots`` (image_id, ann_id), in sampling order
        (repeated pairs with ``allow_duplicates``), categories in order of first appearance in
        the annotations.
    """
    wanted = set(category_ids)
    anns, imgs = _coco_index(data)
    per_cat = OrderedDict()
    for ann_id, ann in anns.items():
        if ann["category_id"] not in wanted:
            continue
        if remove_bad and ann.get("isimpossible", 0) == 1:
            continue
        per_cat.setdefault(ann["category_id"], []).append((ann["image_id"], ann_id))

    missing = sorted(wanted - set(per_cat))
    if missing:
        raise ValueError("{} has no annotation of categories {}".format(source, missing))

    rng = random.Random(seed)
    picks = OrderedDict()
    for cat_id, pairs in per_cat.items():
        rng.shuffle(pairs)
        taken_images, chosen, invalid = set(), [], []
        for image_id, ann_id in pairs:
            if not is_valid_annotation(anns[ann_id], imgs[image_id]):
                if allow_invalid:
                    invalid.append((image_id, ann_id))
                continue
            if image_id in taken_images:
                continue
            taken_images.add(image_id)
            chosen.append((image_id, ann_id))
            if len(chosen) >= shots:
                break
        if len(chosen) < shots and allow_duplicates:
            chosen = chosen or invalid[:shots]
            if chosen:
                picks[cat_id] = [chosen[i % len(chosen)] for i in range(shots)]
                continue
        if len(chosen) < shots:
            raise ValueError(
                "{}: category {} has only {} valid annotations in distinct images, {} shots "
                "were asked (valid: not crowd, box >= {} px, >= {} px from the borders)".format(
                    source, cat_id, len(chosen), shots, MIN_BOX_SIDE, MIN_BORDER_DISTANCE
                )
            )
        picks[cat_id] = chosen
    return picks


def picks_to_coco(data, picks, category_ids):
    """
    The COCO dict of the sampled references: the images of the picks (file order), only the
    picked annotations, and the categories ``category_ids`` sorted by id. An image picked for
    several categories appears once with all its picked annotations. An annotation picked
    more than once (``allow_duplicates``) is written once per pick: the repeats follow the
    annotations in pick order, with fresh ids (from the largest id of ``data`` + 1) and
    ``refseg_copy_of`` = the original id.
    """
    anns, _ = _coco_index(data)
    chosen_anns = {ann_id for pairs in picks.values() for _, ann_id in pairs}
    chosen_imgs = {anns[a]["image_id"] for a in chosen_anns}
    keep = set(category_ids)
    out = {k: v for k, v in data.items() if k not in ("images", "annotations", "categories")}
    out["images"] = [img for img in data.get("images", []) if img["id"] in chosen_imgs]
    out["annotations"] = [anns[a] for a in anns if a in chosen_anns]
    seen, next_id = set(), max(anns, default=0) + 1
    for pairs in picks.values():
        for _, ann_id in pairs:
            if ann_id in seen:
                out["annotations"].append(dict(anns[ann_id], id=next_id, refseg_copy_of=ann_id))
                next_id += 1
            seen.add(ann_id)
    out["categories"] = sorted(
        (c for c in data.get("categories", []) if c["id"] in keep), key=lambda c: c["id"]
    )
    out["refseg_sampling"] = {
        str(cat_id): [[img, ann] for img, ann in pairs] for cat_id, pairs in picks.items()
    }
    return out


def sampled_references_json(out_path, source_json, categories, shots, seed, what, rules=None):
    """
    The path of the sampled reference set (COCO format) of ``source_json``, sampled at first
    use and reused afterwards (rebuilt when the source file changes).

    Args:
        categories (dict): {category id: name} of the sampled classes; checked against the file.
        what (str): the dataset name, named in errors.
        rules (dict or None): keyword arguments of :func:`sample_references` that change the
            authors' default rules (``remove_bad``, ``allow_invalid``, ``allow_duplicates``;
            LVIS), recorded in the sidecar.
    """
    require_file(source_json, what)
    rules = dict(rules or {})

    def build():
        data = load_json(source_json, what)
        check_category_ids(data, categories, source_json)
        picks = sample_references(data, sorted(categories), shots, seed, source=source_json,
                                  **rules)
        return picks_to_coco(data, picks, sorted(categories))

    params = {"categories": sorted(categories), "shots": shots, "seed": seed, "sampler": "ntt"}
    if rules:
        params["rules"] = rules
    return derived_json(out_path, [source_json], params, build)
