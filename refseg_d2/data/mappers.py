"""
Dataset mappers: target images (squashed to the SAM 2 input, or at their own size for SAM 2's
image-predictor interface, plus the encoder input the pooling asks for), and reference images
with the geometry of each reference crop.

Both read images with PIL and convert them to RGB (grayscale, RGBA and palette images
included), as the reference does; Detectron2's BGR ``read_image`` path is not used.
"""
import copy
import logging

import numpy as np
import torch
from detectron2.config import configurable
from detectron2.structures import Boxes, Instances
from PIL import Image

from ..modeling.pooling import pooling_class
from ..utils.geometry import bbox_xywh, context_crop_window
from ..utils.images import read_rgb
from ..utils.masks import decode_segmentation, has_segmentation, segmentation_rle

logger = logging.getLogger(__name__)


def pil_to_tensor(image):
    """PIL RGB -> (3, H, W) uint8 tensor."""
    return torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1).contiguous()


def squash_resize(image, size):
    """Anisotropic resize to size x size with Pillow's bicubic filter (the reference's target input)."""
    return image.resize((size, size), Image.BICUBIC)


def sam_input(image, input_size):
    """
    The SAM 2 input of a PIL image: (3, S, S) uint8 squashed with Pillow's bicubic filter
    (``SAM2.INTERFACE`` "direct", ``input_size`` = S), or the image itself (3, H, W) uint8
    (``input_size`` None: "image_predictor", which resizes in the model).
    """
    return pil_to_tensor(squash_resize(image, input_size) if input_size else image)


def _interface_input_size(cfg):
    """SAM2.INPUT_SIZE for the "direct" interface, None for "image_predictor"."""
    r = cfg.MODEL.REFSEG
    return r.SAM2.INPUT_SIZE if r.SAM2.INTERFACE == "direct" else None


class RefSegTargetMapper:
    """
    Maps a dataset dict to the model input of a target image: "image" is the image squashed
    to S x S (S = MODEL.REFSEG.SAM2.INPUT_SIZE, PIL bicubic) as a (3, S, S) uint8 tensor, or,
    with SAM2.INTERFACE "image_predictor", the image at its own size (3, H, W);
    "encoder_image" is added when the pooling asks for one (``MODEL.REFSEG.POOLING``
    token_grid); "height"/"width" keep the original size (from the dataset dict, as the
    reference takes it from the JSON). Annotations are dropped. An image already in memory (a
    PIL image) can be given instead of reading ``file_name``.
    """

    @configurable
    def __init__(self, *, input_size, apply_exif=False, encoder_input=None, encoder_size=None):
        """
        Args:
            input_size (int or None): S, or None to keep the image size (see :func:`sam_input`).
            encoder_input: None, or a function (PIL image, encoder_size) -> "encoder_image" (the
                pooling's ``encoder_input``).
        """
        self.input_size = input_size
        self.apply_exif = apply_exif
        self.encoder_input = encoder_input
        self.encoder_size = encoder_size
        if input_size:
            logger.info("[RefSegTargetMapper] squash-resize to %dx%d (PIL bicubic)", input_size,
                        input_size)

    @classmethod
    def from_config(cls, cfg):
        return {
            "input_size": _interface_input_size(cfg),
            "apply_exif": cfg.MODEL.REFSEG.INPUT.APPLY_EXIF,
            "encoder_input": pooling_class(cfg).encoder_input,
            "encoder_size": cfg.MODEL.REFSEG.ENCODER.INPUT_SIZE,
        }

    def __call__(self, dataset_dict, image=None):
        """
        Args:
            dataset_dict (dict): with "file_name" (read unless ``image`` is given) and
                optionally "height", "width".
            image (PIL.Image or None): the image itself (converted to RGB).
        """
        d = copy.copy(dataset_dict)
        image = read_rgb(d["file_name"], self.apply_exif) if image is None else image.convert("RGB")
        d.setdefault("width", image.width)
        d.setdefault("height", image.height)
        if (int(d["width"]), int(d["height"])) != image.size:
            logger.warning(
                "Target %s is %dx%d but its dataset entry says %dx%d: predictions are made at the "
                "dataset size (as the reference implementation does)",
                d.get("file_name"), image.width, image.height, int(d["width"]), int(d["height"]),
            )
        d["image"] = sam_input(image, self.input_size)
        encoder_image = self.encoder_input and self.encoder_input(image, self.encoder_size)
        if encoder_image is not None:
            d["encoder_image"] = encoder_image
        d.pop("annotations", None)
        d.pop("sem_seg_file_name", None)
        return d


class RefSegReferenceMapper:
    """
    Maps a reference dataset dict to the input of ``RefSeg.encode_references``: the image at
    its original size and, per non-crowd annotation, its mask (or the box rectangle for a
    box-only annotation, flagged has_mask=False), box and crop window. "sam_image" (the image
    squashed to the SAM 2 input) is added when an annotation has no mask. An image already in
    memory (a PIL image) can be given instead of reading ``file_name``.
    """

    @configurable
    def __init__(self, *, context_ratio, sam_input_size, apply_exif=False, sam2_for_all=False,
                 encoder_input=None, encoder_size=None):
        """
        Args:
            sam_input_size (int or None): see :func:`sam_input`.
            sam2_for_all (bool): SAM 2 masks every reference (MEMORY.MASK_SOURCE sam2_box), so
                "sam_image" is always added.
            encoder_input, encoder_size: as for :class:`RefSegTargetMapper`.
        """
        self.context_ratio = context_ratio
        self.sam_input_size = sam_input_size
        self.apply_exif = apply_exif
        self.sam2_for_all = sam2_for_all
        self.encoder_input = encoder_input
        self.encoder_size = encoder_size

    @classmethod
    def from_config(cls, cfg):
        return {
            "context_ratio": cfg.MODEL.REFSEG.MEMORY.CONTEXT_RATIO,
            "sam_input_size": _interface_input_size(cfg),
            "apply_exif": cfg.MODEL.REFSEG.INPUT.APPLY_EXIF,
            "sam2_for_all": cfg.MODEL.REFSEG.MEMORY.MASK_SOURCE == "sam2_box",
            "encoder_input": pooling_class(cfg).encoder_input,
            "encoder_size": cfg.MODEL.REFSEG.ENCODER.INPUT_SIZE,
        }

    def reference_annotations(self, dataset_dict, width, height):
        """
        The annotations of a reference image that become references, with the rule every
        memory follows: non-crowd, a box-only annotation's box inside the image, a crop window
        that is not empty (the others are skipped with a warning naming them).

        Args:
            dataset_dict (dict): with "file_name" and "annotations"; width, height: image size.
        Returns:
            list of (annotation index, annotation, [x0, y0, x1, y1] box, crop window).
        """
        file_name, kept = dataset_dict.get("file_name"), []
        for i, ann in enumerate(dataset_dict.get("annotations", [])):
            if ann.get("iscrowd", 0):
                continue
            bbox = bbox_xywh(ann)
            x, y, w, h = bbox
            box = [x, y, x + w, y + h]
            what = ann.get("refseg_name") or "reference annotation {}{} of {}".format(
                i, " (id {})".format(ann["id"]) if "id" in ann else "", file_name)
            box_only = not has_segmentation(ann.get("segmentation"))
            if box_only and (x >= width or y >= height or box[2] <= 0 or box[3] <= 0):
                logger.warning("Skipping %s: its box %s (XYXY) lies outside the %dx%d image",
                               what, box, width, height)
                continue
            window = context_crop_window(bbox, width, height, self.context_ratio)
            if window[2] <= window[0] or window[3] <= window[1]:
                logger.warning("Skipping %s: its box %s gives an empty crop", what, bbox)
                continue
            kept.append((i, ann, box, window))
        return kept

    def __call__(self, dataset_dict, image=None):
        """
        Args:
            dataset_dict (dict): "file_name" (read unless ``image`` is given, named in
                messages), optionally "height", "width", and "annotations" (COCO-style, with
                "bbox", "bbox_mode", "category_id" and optionally "segmentation", "id" and
                "refseg_name", how the user named the reference, used in messages).
            image (PIL.Image or None): the image itself (converted to RGB).
        Returns:
            dict: the dataset dict without "annotations", with "image" (3, H, W) uint8,
            "instances" (gt_classes, gt_masks, has_mask, gt_boxes, crop_windows, ann_index and
            ``sources``: per reference its "box" (XYXY list), "segmentation" (COCO RLE or None)
            and "name", what its record keeps) and "sam_image" when an annotation is box-only.
        """
        d = dataset_dict
        file_name = d.get("file_name")
        image = read_rgb(file_name, self.apply_exif) if image is None else image.convert("RGB")
        width, height = int(d.get("width", image.width)), int(d.get("height", image.height))
        if image.size != (width, height):
            logger.warning(
                "Reference %s is %dx%d but the dataset says %dx%d: resized to the dataset size "
                "(as the reference implementation does)", file_name, *image.size, width, height,
            )
            image = image.resize((width, height), Image.BICUBIC)

        classes, masks, has_mask, boxes, windows, ann_index, sources = [], [], [], [], [], [], []
        for i, ann, box, window in self.reference_annotations(d, width, height):
            try:
                mask = decode_segmentation(ann.get("segmentation"), height, width)
            except Exception as e:
                raise ValueError(
                    "Bad segmentation in annotation {} of {}: {}".format(i, file_name, e)
                ) from e
            has_mask.append(mask is not None)
            sources.append({
                "box": box, "name": ann.get("refseg_name"),
                "segmentation": segmentation_rle(ann.get("segmentation"), mask),
            })
            if mask is None:
                mask = np.zeros((height, width), dtype=bool)
                mask[int(box[1]) : int(np.ceil(box[3])), int(box[0]) : int(np.ceil(box[2]))] = True
            classes.append(ann["category_id"])
            masks.append(mask)
            boxes.append(box)
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
        inst.sources = sources

        out = {k: v for k, v in d.items() if k != "annotations"}
        out["image"] = pil_to_tensor(image)
        out["instances"] = inst
        if self.sam2_for_all or not bool(inst.has_mask.all()):
            out["sam_image"] = (sam_input(image, self.sam_input_size) if self.sam_input_size
                                else out["image"])
        encoder_image = self.encoder_input and self.encoder_input(image, self.encoder_size)
        if encoder_image is not None:
            out["encoder_image"] = encoder_image
        return out

