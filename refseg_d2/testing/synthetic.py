"""
A small synthetic COCO-format dataset, generated deterministically: textured shapes of a few
categories (non-contiguous ids) on noisy backgrounds, with overlapping instances and one image
without objects. Used by the demo (``make demo``) and the tests.
"""
import json
import math
import os

import numpy as np
from PIL import Image, ImageDraw

# id -> (name, shape, RGB colour); ids are deliberately not 1..K
CATEGORIES = {
    3: ("red_square", "square", (220, 40, 40)),
    7: ("green_disc", "disc", (40, 200, 60)),
    12: ("blue_triangle", "triangle", (50, 70, 230)),
}


def _polygon(shape, cx, cy, r):
    if shape == "square":
        pts = [(cx - r, cy - r), (cx + r, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
    elif shape == "disc":
        pts = [(cx + r * math.cos(2 * math.pi * k / 24), cy + r * math.sin(2 * math.pi * k / 24))
               for k in range(24)]
    else:
        pts = [(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
    return [round(v, 2) for p in pts for v in p]


def _draw_image(rng, width, height, objects):
    base = rng.randint(90, 160, size=(height, width, 3)).astype(np.uint8)
    image = Image.fromarray(base)
    draw = ImageDraw.Draw(image)
    for cat_id, poly in objects:
        colour = tuple(int(c) for c in np.clip(np.array(CATEGORIES[cat_id][2]) + rng.randint(-15, 16, 3), 0, 255))
        draw.polygon(list(zip(poly[0::2], poly[1::2])), fill=colour)
    return image


def _objects(rng, index, width, height, count, overlap):
    objects = []
    ids = sorted(CATEGORIES)
    for k in range(count):
        cat_id = ids[(k + index) % len(ids)]
        r = rng.uniform(0.12, 0.22) * min(width, height)
        if overlap and objects:
            _, prev = objects[-1]
            cx, cy = prev[0] + r * 0.8, prev[1] + r * 0.6
        else:
            cx = rng.uniform(r + 2, width - r - 2)
            cy = rng.uniform(r + 2, height - r - 2)
        objects.append((cat_id, (min(max(cx, r + 2), width - r - 2), min(max(cy, r + 2), height - r - 2), r)))
    return [(c, _polygon(CATEGORIES[c][1], *geom)) for c, geom in objects]


def _annotation(ann_id, image_id, cat_id, poly, with_mask=True):
    xs, ys = poly[0::2], poly[1::2]
    x0, y0 = min(xs), min(ys)
    w, h = max(xs) - x0, max(ys) - y0
    ann = {
        "id": ann_id, "image_id": image_id, "category_id": cat_id, "iscrowd": 0,
        "bbox": [x0, y0, w, h], "area": float(w * h),
    }
    if with_mask:
        ann["segmentation"] = [poly]
    return ann


def make_split(root, name, num_images, seed, size=(128, 96), empty_images=0, overlap_every=2,
               box_only_every=0, first_image_id=1):
    """
    Write ``root/<name>/*.png`` and ``root/<name>.json``.

    Args:
        size: (width, height) of every image.
        empty_images (int): the last this-many images have no object.
        overlap_every (int): every n-th image has overlapping instances (0: never).
        box_only_every (int): every n-th annotation has no segmentation (0: never).
    Returns:
        (json_path, image_root)
    """
    rng = np.random.RandomState(seed)
    width, height = size
    image_root = os.path.join(root, name)
    os.makedirs(image_root, exist_ok=True)
    images, annotations = [], []
    ann_id = 1000 * first_image_id
    for i in range(num_images):
        image_id = first_image_id + i
        count = 0 if i >= num_images - empty_images else 1 + i % 3
        overlap = bool(overlap_every) and i % overlap_every == 1
        objects = _objects(rng, i, width, height, count, overlap)
        file_name = "{}_{:04d}.png".format(name, image_id)
        _draw_image(rng, width, height, objects).save(os.path.join(image_root, file_name))
        images.append({"id": image_id, "file_name": file_name, "width": width, "height": height})
        for cat_id, poly in objects:
            ann_id += 1
            with_mask = not (box_only_every and ann_id % box_only_every == 0)
            annotations.append(_annotation(ann_id, image_id, cat_id, poly, with_mask))
    categories = [{"id": k, "name": v[0]} for k, v in sorted(CATEGORIES.items())]
    json_path = os.path.join(root, name + ".json")
    with open(json_path, "w") as f:
        json.dump({"images": images, "annotations": annotations, "categories": categories}, f)
    return json_path, image_root


# (width, height) of `make demo`'s images: large enough for the Visualizer's labels not to overlap
DEMO_SIZE = (320, 240)


def make_demo_dataset(root, seed=0, size=(128, 96)):
    """
    References (one image per category and a few more) and targets with an image without
    objects, every image ``size`` = (width, height) (``make demo`` uses ``DEMO_SIZE``; the
    default is the benchmark tool's). Returns {"refs": (json, image_root), "targets": (json,
    image_root)}.
    """
    refs = make_split(root, "refs", num_images=6, seed=seed, size=size, overlap_every=0)
    targets = make_split(root, "targets", num_images=6, seed=seed + 1, size=size, empty_images=1,
                         first_image_id=101)
    return {"refs": refs, "targets": targets}
