"""COCO segmentations to and from binary masks."""
import numpy as np
import pycocotools.mask as mask_util
from detectron2.data.detection_utils import polygons_to_bitmask


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


def encode_mask(mask):
    """(H, W) bool array -> COCO RLE with a str "counts" (JSON- and torch.load-safe)."""
    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle
