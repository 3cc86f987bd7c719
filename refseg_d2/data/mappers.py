"""
Dataset mappers: target images squashed to the SAM 2 input, and reference images with the
geometry of each reference crop.

Both read images with PIL and convert them to RGB (grayscale, RGBA and palette images
included), as the reference does; Detectron2's BGR ``read_image`` path is not used.
"""
import copy
import logging

import numpy as np
import pycocotools.mask as mask_util
import torch
from detectron2.config import configurable
from detectron2.data.detection_utils import polygons_to_bitmask
from detectron2.structures import BoxMode, Boxes, Instances
from PIL import Image, ImageOps

logger = logging.getLogger(__name__)


def read_rgb(file_name, apply_exif=False):
    """
    Read an image as RGB PIL. Errors name the file.
    """
    try:
        with open(file_name, "rb") as f:
            image = Image.open(f)
            image.load()
    except FileNotFoundError as e:
        raise FileNotFoundError("Image file not found: {}".format(file_name)) from e
    except Exception as e:
        raise IOError("Cannot read image {}: {}".format(file_name, e)) from e
    if apply_exif:
        image = ImageOps.exif_transpose(image)
    return image.convert("RGB")


def pil_to_tensor(image):
    """PIL RGB -> (3, H, W) uint8 tensor."""
    return torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1).contiguous()


def squash_resize(image, size):
    """Anisotropic resize to size x size with Pillow's bicubic filter (the reference's target input)."""
    return image.resize((size, size), Image.BICUBIC)


class RefSegTargetMapper:
    """
    Maps a dataset dict to the model input of a target image: "image" is the image squashed
    to S x S (S = MODEL.REFSEG.SAM2.INPUT_SIZE, PIL bicubic) as a (3, S, S) uint8 tensor;
    "height"/"width" keep the original size (from the dataset dict, as the reference takes
    it from the JSON). Annotations are dropped.
    """

    @configurable
    def __init__(self, *, input_size, apply_exif=False):
        self.input_size = input_size
        self.apply_exif = apply_exif
        logger.info("[RefSegTargetMapper] squash-resize to %dx%d (PIL bicubic)", input_size, input_size)

    @classmethod
    def from_config(cls, cfg):
        return {
            "input_size": cfg.MODEL.REFSEG.SAM2.INPUT_SIZE,
            "apply_exif": cfg.MODEL.REFSEG.INPUT.APPLY_EXIF,
        }

    def __call__(self, dataset_dict):
        d = copy.copy(dataset_dict)
        image = read_rgb(d["file_name"], self.apply_exif)
        d.setdefault("width", image.width)
        d.setdefault("height", image.height)
        d["image"] = pil_to_tensor(squash_resize(image, self.input_size))
        d.pop("annotations", None)
        d.pop("sem_seg_file_name", None)
        return d


def context_crop_window(bbox_xywh, width, height, context_ratio):
    """
    The reference crop around a box, computed exactly as the reference does (Python floats,
    ``int()`` truncation): the box corners are truncated to ints, the crop is a square of side
    (1 + context_ratio) * max(box w, box h) centred on the box, clipped to the image.

    Returns:
        (x0, y0, x1, y1) ints, the crop is image[y0:y1, x0:x1].
    """
    x, y, w, h = (float(v) for v in bbox_xywh)
    bx0, by0, bx1, by1 = int(x), int(y), int(x + w), int(y + h)
    cx, cy = (bx0 + bx1) * 0.5, (by0 + by1) * 0.5
    side = max(bx1 - bx0, by1 - by0) * (1.0 + context_ratio)
    return (
        max(0, int(cx - side * 0.5)),
        max(0, int(cy - side * 0.5)),
        min(width, int(cx + side * 0.5)),
        min(height, int(cy + side * 0.5)),
    )


def decode_segmentation(segm, height, width):
    """
    A COCO segmentation (polygons, RLE or uncompressed RLE) as an (H, W) bool array, or None
    when the annotation has none (box-only).
    """
    if segm is None or (isinstance(segm, list) and len(segm) == 0):
        return None
    if isinstance(segm, list):
        return polygons_to_bitmask(segm, height, width)
    if isinstance(segm, dict):
        if isinstance(segm.get("counts"), list):
            segm = mask_util.frPyObjects(segm, height, width)
        return mask_util.decode(segm).astype(bool)
    if isinstance(segm, np.ndarray):
        return segm.astype(bool)
    raise ValueError("Unknown segmentation type {}".format(type(segm)))


class RefSegReferenceMapper:
    """
    Maps a reference dataset dict to the input of ``RefSeg.encode_references``: the image at
    its original size and, per non-crowd annotation, its mask (or the box rectangle for a
    box-only annotation, flagged has_mask=False), box and crop window. "sam_image" (the image
    squashed to the SAM 2 input) is added when an annotation has no mask.
    """

    @configurable
    def __init__(self, *, context_ratio, sam_input_size, apply_exif=False):
        self.context_ratio = context_ratio
        self.sam_input_size = sam_input_size
        self.apply_exif = apply_exif

    @classmethod
    def from_config(cls, cfg):
        return {
            "context_ratio": cfg.MODEL.REFSEG.MEMORY.CONTEXT_RATIO,
            "sam_input_size": cfg.MODEL.REFSEG.SAM2.INPUT_SIZE,
            "apply_exif": cfg.MODEL.REFSEG.INPUT.APPLY_EXIF,
        }

    def __call__(self, dataset_dict):
        d = dataset_dict
        file_name = d["file_name"]
        image = read_rgb(file_name, self.apply_exif)
        width, height = int(d.get("width", image.width)), int(d.get("height", image.height))
        if image.size != (width, height):
            logger.warning(
                "Reference %s is %dx%d but the dataset says %dx%d: resized to the dataset size "
                "(as the reference implementation does)", file_name, *image.size, width, height,
            )
            image = image.resize((width, height), Image.BICUBIC)

        classes, masks, has_mask, boxes, windows, ann_index = [], [], [], [], [], []
        for i, ann in enumerate(d.get("annotations", [])):
            if ann.get("iscrowd", 0):
                continue
            bbox = _bbox_xywh(ann)
            window = context_crop_window(bbox, width, height, self.context_ratio)
            if window[2] <= window[0] or window[3] <= window[1]:
                logger.warning(
                    "Skipping reference annotation %d of %s: its box %s gives an empty crop",
                    i, file_name, bbox,
                )
                continue
            try:
                mask = decode_segmentation(ann.get("segmentation"), height, width)
            except Exception as e:
                raise ValueError(
                    "Bad segmentation in annotation {} of {}: {}".format(i, file_name, e)
                ) from e
            x, y, w, h = bbox
            has_mask.append(mask is not None)
            if mask is None:
                mask = np.zeros((height, width), dtype=bool)
                mask[int(y) : int(np.ceil(y + h)), int(x) : int(np.ceil(x + w))] = True
            classes.append(ann["category_id"])
            masks.append(mask)
            boxes.append([x, y, x + w, y + h])
            windows.append(window)
            ann_index.append(i)

        inst = Instances((height, width))
        inst.gt_classes = torch.tensor(classes, dtype=torch.int64)
        inst.gt_masks = (
            torch.from_numpy(np.stack(masks)) if masks else torch.zeros((0, height, width), dtype=torch.bool)
        )
        inst.has_mask = torch.tensor(has_mask, dtype=torch.bool)
        inst.gt_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
        inst.crop_windows = torch.tensor(windows, dtype=torch.int64).reshape(-1, 4)
        inst.ann_index = torch.tensor(ann_index, dtype=torch.int64)

        out = {k: v for k, v in d.items() if k != "annotations"}
        out["image"] = pil_to_tensor(image)
        out["instances"] = inst
        if not bool(inst.has_mask.all()):
            out["sam_image"] = pil_to_tensor(squash_resize(image, self.sam_input_size))
        return out


def _bbox_xywh(ann):
    mode = ann.get("bbox_mode", BoxMode.XYWH_ABS)
    return [float(v) for v in BoxMode.convert(list(ann["bbox"]), mode, BoxMode.XYWH_ABS)]
