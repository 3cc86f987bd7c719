"""
Inputs of the FSOD-VFM parity check (``tools/fsod_vfm_parity.py``), generated deterministically:
synthetic references and targets at several image sizes, the support file in the authors'
format, and a proposal boxes file (COCO results format) that exercises every step of their
proposal handling: boxes partly or wholly outside the image, boxes that become empty once cast
to integers or clipped, scores below the 0.01 threshold and exactly at float32(0.01), scores that
tie once rounded to 2 decimals (distinct float32 values), an exact duplicate box, an image with
more than 100 proposals (a degenerate one among the top 100), an image with a single usable
proposal and images with a few proposals.
"""
import json
import os

import numpy as np

from .synthetic import make_split

__all__ = ["REFERENCE_SPLITS", "TARGET_SPLITS", "make_parity_inputs"]

# (split name, number of images, (width, height), first image id, images without objects)
REFERENCE_SPLITS = [
    ("r320x240", 4, (320, 240), 1, 0),
    ("r240x320", 2, (240, 320), 11, 0),
    ("r640x480", 1, (640, 480), 21, 0),
]
TARGET_SPLITS = [
    ("t320x240", 3, (320, 240), 101, 0),
    ("t240x320", 2, (240, 320), 201, 0),
    ("t500x375", 2, (500, 375), 301, 1),
    ("t100x75", 1, (100, 75), 401, 0),
    ("t288x216", 2, (288, 216), 501, 0),
]
MANY_BOXES_IMAGE = 101      # gets more than 100 proposals
SINGLE_BOX_IMAGE = 401      # gets exactly one proposal that survives filtering and clipping
# get a few proposals only: few masks per class, so most scores survive the graph diffusion
FEW_BOXES_IMAGES = (501, 502)


def _merged_split(root, name, splits, seed):
    """Write the splits with ``make_split`` and one COCO file of them all (file names relative to
    ``root``). Returns the COCO file's path."""
    merged = {"images": [], "annotations": [], "categories": None}
    for k, (split, count, size, first_id, empty) in enumerate(splits):
        path, _ = make_split(root, split, count, seed + k, size=size, empty_images=empty,
                             overlap_every=2, first_image_id=first_id)
        with open(path) as f:
            data = json.load(f)
        for image in data["images"]:
            image["file_name"] = split + "/" + image["file_name"]
        merged["images"] += data["images"]
        merged["annotations"] += data["annotations"]
        merged["categories"] = data["categories"]
    out = os.path.join(root, name + ".json")
    with open(out, "w") as f:
        json.dump(merged, f)
    return out


def support_file(coco_path, out_path):
    """
    The authors' support format from a COCO file: {class name: [{"image": file name, "bbox":
    XYWH}, ...]}, classes in category-id order, one entry per annotation in annotation order.
    """
    with open(coco_path) as f:
        coco = json.load(f)
    names = {c["id"]: c["name"] for c in coco["categories"]}
    files = {im["id"]: im["file_name"] for im in coco["images"]}
    support = {names[cid]: [] for cid in sorted(names)}
    for ann in coco["annotations"]:
        support[names[ann["category_id"]]].append(
            {"image": files[ann["image_id"]], "bbox": ann["bbox"]})
    support = {name: entries for name, entries in support.items() if entries}
    with open(out_path, "w") as f:
        json.dump(support, f)
    return out_path


def _coord(rng, v):
    """``v`` moved to a fraction in [0.1, 0.9] of its pixel, 2 decimals: the same integer
    whichever way a reader converts XYWH to XYXY (float32 or float64)."""
    return round(float(np.floor(v) + rng.uniform(0.1, 0.9)), 2)


def _special_boxes(w, h):
    """(x1, y1, x2, y2, score) of the edge cases, at positions relative to the image."""
    sub = float(np.floor(0.3 * w))
    return [
        (-0.3 * w, -0.2 * h, 0.45 * w, 0.55 * h, 0.62),    # negative corner, clipped to 0
        (0.55 * w, 0.6 * h, 1.3 * w, 1.25 * h, 0.58),      # beyond W and H, clipped to them
        (w + 4, 0.2 * h, w + 40, 0.5 * h, 0.97),           # right of the image: empty once clipped
        (0.2 * w, -40, 0.5 * w, -3, 0.955),                # above the image: empty once clipped
        (sub + 0.2, 0.3 * h, sub + 0.7, 0.6 * h, 0.965),   # sub-pixel wide: empty once cast to int
    ]


def _target_boxes(rng, image, anns):
    """The (x1, y1, x2, y2, score) proposals of one target image, and the index of the box that
    repeats box 0 exactly (None when there is none)."""
    w, h = image["width"], image["height"]
    jittered = []
    for ann in anns:
        x, y, bw, bh = ann["bbox"]
        for _ in range(2):
            dx, dy = rng.uniform(-0.12, 0.12, 2) * (bw, bh)
            sw, sh = rng.uniform(0.85, 1.15, 2)
            jittered.append((x + dx, y + dy, x + dx + bw * sw, y + dy + bh * sh,
                             rng.uniform(0.3, 0.95)))
    if image["id"] == SINGLE_BOX_IMAGE:
        boxes = jittered[:1] + _special_boxes(w, h)[2:]
        return boxes + [(0.1 * w, 0.1 * h, 0.6 * w, 0.7 * h, s) for s in (0.005, 0.0099)], None
    if image["id"] in FEW_BOXES_IMAGES:
        return jittered[::2] + [(0.1 * w, 0.2 * h, 0.7 * w, 0.9 * h, 0.31),
                                (-5.5, 0.5 * h, 0.4 * w, h + 6.5, 0.27)], None
    n_random = 130 if image["id"] == MANY_BOXES_IMAGE else 12
    randoms = []
    for _ in range(n_random):
        x1, y1 = rng.uniform(-0.25, 0.9) * w, rng.uniform(-0.25, 0.9) * h
        randoms.append((x1, y1, x1 + rng.uniform(0.06, 0.7) * w, y1 + rng.uniform(0.06, 0.7) * h,
                        rng.uniform(0.0, 0.9)))
    # thresholds: 0 and below 0.01 (dropped), float32(0.01) (kept), just above; ties at 2 decimals
    specials = (0.0, 0.005, 0.0099, float(np.float32(0.01)), 0.0101, 0.4412, 0.4389, 0.2051,
                0.1968)
    randoms[:len(specials)] = [b[:4] + (s,) for b, s in zip(randoms, specials)]
    duplicate = [jittered[0][:4] + (jittered[0][4] - 0.0123,)] if jittered else []
    return jittered + duplicate + randoms + _special_boxes(w, h), (len(jittered) or None)


def _distinct_float32(scores):
    """The scores as float32 values, made pairwise distinct by small upward nudges."""
    seen, out = set(), []
    for s in scores:
        v = np.float32(s)
        while float(v) in seen:
            v = np.nextafter(v, np.float32(2.0))
        seen.add(float(v))
        out.append(float(v))
    return out


def boxes_file(coco_path, out_path, seed):
    """
    Write the proposals of every image of ``coco_path`` as COCO results ({"image_id", "bbox"
    XYWH, "score"}); scores are float32 values (exact in JSON), distinct within an image.
    """
    with open(coco_path) as f:
        coco = json.load(f)
    results = []
    for image in coco["images"]:
        rng = np.random.RandomState(seed * 1000 + image["id"])
        anns = [a for a in coco["annotations"] if a["image_id"] == image["id"]]
        boxes, duplicate = _target_boxes(rng, image, anns)
        scores = _distinct_float32([b[4] for b in boxes])
        if not any(s >= 0.01 for s in scores):
            raise AssertionError("image {} has no proposal >= 0.01".format(image["id"]))
        rows = []
        for (x1, y1, x2, y2, _), s in zip(boxes, scores):
            if x2 - x1 >= 1:     # the sub-pixel box keeps its exact x corners
                x1, x2 = _coord(rng, x1), _coord(rng, x2)
            x1, y1, x2, y2 = round(x1, 2), _coord(rng, y1), round(x2, 2), _coord(rng, y2)
            rows.append({"image_id": image["id"], "score": s,
                         "bbox": [x1, y1, round(x2 - x1, 2), round(y2 - y1, 2)]})
        if duplicate is not None:
            rows[duplicate]["bbox"] = list(rows[0]["bbox"])
        results += rows
    with open(out_path, "w") as f:
        json.dump(results, f)
    return out_path


def make_parity_inputs(root, seed=0):
    """
    Write the references, targets, support file and boxes file under ``root``. Returns a dict of
    paths: ``refs_json``, ``test_json``, ``image_root`` (of both COCO files), ``support_json``,
    ``boxes_json``.
    """
    os.makedirs(root, exist_ok=True)
    refs = _merged_split(root, "refs", REFERENCE_SPLITS, seed)
    test = _merged_split(root, "test", TARGET_SPLITS, seed + 100)
    return {
        "refs_json": refs, "test_json": test, "image_root": root,
        "support_json": support_file(refs, os.path.join(root, "support.json")),
        "boxes_json": boxes_file(test, os.path.join(root, "boxes.json"), seed),
    }
