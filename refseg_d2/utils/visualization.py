"""
Drawing helpers shared by the user tools: predictions and ground truth with Detectron2's
Visualizer, side-by-side panels, COCO results back to ``Instances``, and the sheet of reference
crops of a memory.
"""
import logging
import os

import numpy as np
import torch
from detectron2.structures import Boxes, BoxMode, Instances
from detectron2.utils.colormap import colormap
from detectron2.utils.visualizer import Visualizer
from PIL import Image, ImageDraw

from .images import read_rgb
from .masks import decode_segmentation

logger = logging.getLogger(__name__)

PANEL_GAP = 4
GREY = (128, 128, 128)
RED = (220, 0, 0)


def draw_predictions(image, instances, metadata, score_thresh=0.0, scale=1.0):
    """
    Args:
        image: (H, W, 3) uint8 RGB array or PIL image.
        instances (Instances): predictions at (H, W) (any device).
        metadata: with ``thing_classes``.
        scale (float): the drawing is ``scale`` times the image size (Visualizer's scale).
    Returns:
        (H, W, 3) uint8 RGB array (times ``scale``): the instances with a score >=
        ``score_thresh``.
    """
    instances = instances.to("cpu")
    instances = instances[instances.scores >= score_thresh]
    visualizer = Visualizer(np.asarray(image), metadata, scale=scale)
    return visualizer.draw_instance_predictions(instances).get_image()


def draw_ground_truth(image, dataset_dict, metadata, scale=1.0):
    """
    (H, W, 3) uint8 RGB array (times ``scale``) of the annotations of a dataset dict
    (contiguous category ids).
    """
    visualizer = Visualizer(np.asarray(image), metadata, scale=scale)
    return visualizer.draw_dataset_dict(dataset_dict).get_image()


def side_by_side(panels, gap=PANEL_GAP):
    """Paste (H_i, W_i, 3) uint8 arrays left to right on a white canvas; returns a PIL image."""
    panels = [Image.fromarray(np.asarray(p)) for p in panels]
    width = sum(p.width for p in panels) + gap * (len(panels) - 1)
    canvas = Image.new("RGB", (width, max(p.height for p in panels)), "white")
    x = 0
    for p in panels:
        canvas.paste(p, (x, 0))
        x += p.width + gap
    return canvas


def output_path(folder, file_name, used, ext=".png"):
    """``folder/<stem><ext>``, with a numeric suffix when ``used`` (a set, updated) has it."""
    stem = os.path.splitext(os.path.basename(file_name))[0]
    candidate, n = stem, 1
    while candidate in used:
        candidate = "{}_{}".format(stem, n)
        n += 1
    used.add(candidate)
    return os.path.join(folder, candidate + ext)


def coco_results_to_instances(results, height, width, id_to_contiguous):
    """
    COCO-format detections of one image as ``Instances``.

    Args:
        results (list[dict]): "bbox" (XYWH), "score", "category_id" (dataset id) and optionally
            "segmentation" (RLE).
        id_to_contiguous (dict): dataset category id -> contiguous class index.
    Returns:
        Instances at (height, width) with pred_boxes, scores, pred_classes and, when every
        result has a segmentation, pred_masks (N, H, W) bool.
    """
    unknown = sorted({r["category_id"] for r in results} - set(id_to_contiguous))
    if unknown:
        raise ValueError("Results have category ids {} that the dataset does not have (it has {})"
                         .format(unknown, sorted(id_to_contiguous)))
    inst = Instances((height, width))
    boxes = np.array([r["bbox"] for r in results], dtype=np.float32).reshape(-1, 4)
    boxes = BoxMode.convert(boxes, BoxMode.XYWH_ABS, BoxMode.XYXY_ABS)
    inst.pred_boxes = Boxes(torch.from_numpy(boxes))
    inst.scores = torch.tensor([float(r["score"]) for r in results], dtype=torch.float32)
    inst.pred_classes = torch.tensor([id_to_contiguous[r["category_id"]] for r in results],
                                     dtype=torch.int64)
    if results and all("segmentation" in r for r in results):
        masks = [decode_segmentation(r["segmentation"], height, width) for r in results]
        inst.pred_masks = torch.from_numpy(np.stack(masks))
    return inst


def _fit(image, size):
    """Resize a PIL image to fit in size x size (aspect kept), centred on grey."""
    scale = size / max(image.width, image.height)
    new_size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    resized = image.resize(new_size, Image.BILINEAR)
    tile = Image.new("RGB", (size, size), GREY)
    tile.paste(resized, ((size - resized.width) // 2, (size - resized.height) // 2))
    return tile


def _read_cached(file_name, cache):
    """(H, W, 3) RGB array of an image file, None (with a warning) when it cannot be read."""
    if not file_name:
        return None
    if file_name not in cache:
        try:
            cache[file_name] = np.asarray(read_rgb(file_name))
        except (IOError, OSError) as e:
            logger.warning("Reference crop sheet: %s", e)
            cache[file_name] = None
    return cache[file_name]


def reference_tile(record, color, size=96, image_cache=None):
    """
    One reference crop: the encoded crop window with its mask overlaid (box-only references:
    their box outlined; SAM 2's mask is not stored). A reference whose image is unavailable
    shows its mask on grey.

    Args:
        record (dict): a provenance record ("file_name", "crop_window", "box", "segmentation").
        color: RGB of the overlay.
    Returns:
        (PIL image size x size, whether the image was found)
    """
    x0, y0, x1, y1 = record["crop_window"]
    segm = record.get("segmentation")
    image = _read_cached(record.get("file_name"), {} if image_cache is None else image_cache)
    if image is not None and segm is not None and list(image.shape[:2]) != list(segm["size"]):
        logger.warning("Reference crop sheet: %s is %s but its reference mask is %s (changed "
                       "file?)", record["file_name"], image.shape[:2], segm["size"])
        image = None
    found = image is not None
    if image is None and segm is not None:
        image = np.full(tuple(segm["size"]) + (3,), GREY, dtype=np.uint8)
    if image is None:
        return _fit(Image.new("RGB", (max(1, x1 - x0), max(1, y1 - y0)), GREY), size), False
    crop = image[y0:y1, x0:x1].astype(np.float32)
    if segm is not None:
        mask = decode_segmentation(segm, *segm["size"])[y0:y1, x0:x1]
        crop[mask] = crop[mask] * 0.5 + np.asarray(color, dtype=np.float32) * 0.5
    pil = Image.fromarray(crop.clip(0, 255).astype(np.uint8))
    if segm is None:
        bx0, by0, bx1, by1 = record["box"]
        outline = tuple(int(c) for c in color)
        ImageDraw.Draw(pil).rectangle(
            [bx0 - x0, by0 - y0, bx1 - x0 - 1, by1 - y0 - 1], outline=outline, width=2
        )
    return _fit(pil, size), found


def reference_crop_sheet(class_names, provenance, captions=None, flagged=None, tile=96,
                         max_shots=10, label_width=150):
    """
    A sheet of the reference crops of a memory: one row per class, one tile per shot.

    Args:
        class_names (list[str]): C names.
        provenance (list): per class, provenance records of its shots, or None (unknown).
        captions (list[list[str]] or None): per class, per shot, text under the tile.
        flagged (list[list[bool]] or None): per class, per shot: framed in red.
        max_shots (int): at most this many tiles per row.
    Returns:
        PIL image.
    """
    caption_h = 12
    shots = max([len(p) for p in provenance if p] + [1])
    columns = min(shots, max_shots)
    row_h = tile + caption_h + 6
    sheet = Image.new("RGB", (label_width + columns * (tile + 4) + 4, row_h * len(class_names) + 4),
                      "white")
    draw = ImageDraw.Draw(sheet)
    colors = colormap(rgb=True)
    cache = {}
    for c, name in enumerate(class_names):
        y = 4 + c * row_h
        records = provenance[c]
        count = "?" if records is None else len(records)
        draw.text((4, y + 4), "{}\n{} shot{}".format(name, count, "" if count == 1 else "s"),
                  fill=(0, 0, 0))
        if records is None:
            draw.text((label_width, y + tile // 2), "reference sources unknown", fill=RED)
            continue
        for s, record in enumerate(records[:columns]):
            x = label_width + s * (tile + 4)
            image, found = reference_tile(record, colors[c % len(colors)], tile, cache)
            sheet.paste(image, (x, y))
            is_flagged = bool(flagged and flagged[c][s])
            if is_flagged:
                draw.rectangle([x - 2, y - 2, x + tile + 1, y + tile + 1], outline=RED, width=2)
            text = captions[c][s] if captions else ""
            if not found:
                text = (text + " no image").strip()
            draw.text((x, y + tile + 1), text, fill=RED if is_flagged else (0, 0, 0))
    return sheet
