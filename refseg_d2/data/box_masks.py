"""
SAM 2 masks for box-only COCO annotations, image by image with resumable progress: what
``tools/add_sam2_masks.py`` runs. The boxes are prompted as the memory stage prompts the boxes of
box-only references (:func:`refseg_d2.modeling.memory.encoding.masks_from_boxes`); each mask is
stored as the authors' external-contour polygons or as RLE (:func:`encode_mask`).
"""
import json
import os

import cv2
import numpy as np
import pycocotools.mask as mask_util
import torch
from PIL import Image
from tqdm import tqdm

from ..modeling.memory.encoding import masks_from_boxes
from ..utils.geometry import xywh_to_xyxy
from ..utils.images import read_rgb
from .mappers import pil_to_tensor, squash_resize

MASK_FORMATS = ("polygon", "rle")


def needs_mask(ann, overwrite):
    """Whether ``ann`` gets a SAM 2 mask: it has no segmentation, or ``overwrite``."""
    return overwrite or not ann.get("segmentation")


def image_masks(prompter, image, boxes_xywh, box_batch, upsample_chunk):
    """
    Args:
        image: RGB PIL image at the annotations' size (W, H).
        boxes_xywh: list of COCO boxes.
    Returns:
        (R, H, W) bool masks.
    """
    sam_image = pil_to_tensor(squash_resize(image, prompter.input_size))
    boxes = torch.tensor([xywh_to_xyxy(b) for b in boxes_xywh], dtype=torch.float32)
    with torch.no_grad():
        masks = masks_from_boxes(prompter, sam_image, boxes, (image.height, image.width),
                                 upsample_chunk, box_batch)
    return masks.cpu().numpy()


def encode_mask(mask, bbox, mask_format="polygon"):
    """
    Args:
        mask: (H, W) bool, SAM 2's mask; bbox: the annotation's COCO box.
    Returns:
        (segmentation, area, fell_back): polygons or RLE (str counts), the pixel count of
        ``mask``, and whether the box replaced an empty result.
    """
    area = float(mask.sum())
    x, y, w, h = bbox
    if mask_format == "polygon":
        contours, _ = cv2.findContours(
            mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE
        )
        polygons = [c.flatten().tolist() for c in contours]
        polygons = [p for p in polygons if len(p) > 4]
        if not polygons:
            return [[x, y, x + w, y, x + w, y + h, x, y + h]], area, True
        return polygons, area, False
    fell_back = not mask.any()
    if fell_back:
        mask = np.zeros_like(mask)
        mask[int(y) : int(np.ceil(y + h)), int(x) : int(np.ceil(x + w))] = True
        area = float(mask.sum())
    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle, area, fell_back


def read_progress(path, header):
    """
    The masks recorded in a progress file, {annotation index: [segmentation, area, fell_back]};
    creates the file (with ``header``) when missing. A line cut by an interruption is skipped
    and its image done again.
    """
    if not os.path.isfile(path):
        with open(path, "w") as f:
            f.write(json.dumps(header) + "\n")
        return {}
    with open(path) as f:
        lines = f.read().split("\n")
    if json.loads(lines[0]) != json.loads(json.dumps(header)):
        raise ValueError(
            "{} was written for another input or SAM 2 model; delete it to start over".format(path)
        )
    if lines[-1]:
        with open(path, "a") as f:
            f.write("\n")
    done = {}
    for line in lines[1:]:
        try:
            record = json.loads(line)
        except ValueError:
            continue  # the last line of an interrupted write
        done.update({int(k): v for k, v in record["masks"].items()})
    return done


def add_sam2_masks(data, image_root, prompter, progress_path, header, overwrite=False,
                   box_batch=64, upsample_chunk=64, max_images=0, mask_format="polygon"):
    """
    Fill the masks of ``data`` (a COCO dict, changed in place) image by image, recording each
    image in ``progress_path``.

    Returns:
        dict: "images" done in this call, "remaining" images, "masks", "box_fallbacks".
    """
    done = read_progress(progress_path, header)
    per_image = {}
    for index, ann in enumerate(data.get("annotations", [])):
        if needs_mask(ann, overwrite):
            per_image.setdefault(ann["image_id"], []).append(index)
    images = {img["id"]: img for img in data.get("images", [])}
    todo = [i for i in per_image if any(k not in done for k in per_image[i])]
    stats = {"images": 0, "remaining": len(todo), "masks": 0, "box_fallbacks": 0}
    with open(progress_path, "a") as progress:
        for image_id in tqdm(todo, desc="SAM 2 masks"):
            if max_images and stats["images"] >= max_images:
                break
            info = images[image_id]
            image = read_rgb(os.path.join(image_root, info["file_name"]))
            size = (int(info.get("width", image.width)), int(info.get("height", image.height)))
            if image.size != size:
                image = image.resize(size, Image.BICUBIC)
            indices = per_image[image_id]
            boxes = [data["annotations"][k]["bbox"] for k in indices]
            masks = image_masks(prompter, image, boxes, box_batch, upsample_chunk)
            record = {}
            for k, mask, box in zip(indices, masks, boxes):
                record[str(k)] = list(encode_mask(mask, box, mask_format))
            progress.write(json.dumps({"image_id": image_id, "masks": record}) + "\n")
            progress.flush()
            done.update({int(k): v for k, v in record.items()})
            stats["images"] += 1
            stats["remaining"] -= 1
    for k, (segmentation, area, _) in done.items():
        data["annotations"][k]["segmentation"] = segmentation
        data["annotations"][k]["area"] = area
    stats["masks"] = len(done)
    stats["box_fallbacks"] = sum(int(v[2]) for v in done.values())
    return stats
