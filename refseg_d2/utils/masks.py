"""COCO segmentations to and from binary masks; mask arrays given by users."""
import logging

import numpy as np
import pycocotools.mask as mask_util
from detectron2.data.detection_utils import polygons_to_bitmask

logger = logging.getLogger(__name__)

# A reference mask covering at least this share of its image is reported (a likely inverted,
# soft or all-foreground mask rather than an object).
WHOLE_IMAGE_SHARE = 0.95


def has_segmentation(segm):
    """Whether an annotation's "segmentation" value holds a mask (else it is box-only)."""
    return not (segm is None or (isinstance(segm, list) and len(segm) == 0))


def decode_segmentation(segm, height, width):
    """
    A COCO segmentation (polygons, RLE or uncompressed RLE) as an (H, W) bool array, or None
    when the annotation has none (box-only).
    """
    if not has_segmentation(segm):
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


def segmentation_rle(segm, mask):
    """
    The COCO RLE (str counts) of an annotation's mask: ``segm`` itself when it already is one
    at the mask's size, else ``mask`` encoded; None for a box-only annotation.

    Args:
        segm: the annotation's "segmentation"; mask: (H, W) bool, its decoding (or None).
    """
    if mask is None:
        return None
    if (isinstance(segm, dict) and isinstance(segm.get("counts"), str)
            and list(segm.get("size", ())) == list(mask.shape)):
        return {"size": list(segm["size"]), "counts": segm["counts"]}
    return encode_mask(mask)


def binary_mask(mask, source):
    """
    A user's mask as an (H, W) bool array. Bool arrays and masks with at most two levels
    (0 and one other value: 0/1, 0/255 label images) are "non-zero = object". Anything with more
    levels (a soft edge, a probability map) is binarised at mid-grey, ``>= 128`` for integers
    and ``>= 0.5`` for floats in [0, 1], with a warning naming ``source``; a mask covering
    nearly the whole image (``WHOLE_IMAGE_SHARE``) is warned about too.

    Args:
        mask: (H, W) array of bool, integer or float values.
        source (str): how the user gave it, e.g. a file name; named in warnings.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError("Mask {} must be 2-D (H, W), got shape {}".format(source, mask.shape))
    if mask.dtype == bool:
        out = mask
    else:
        levels = np.unique(mask)
        if len(levels) <= 2 and levels.min() >= 0 and (len(levels) < 2 or levels[0] == 0):
            out = mask != 0
        else:
            mid = 0.5 if np.issubdtype(mask.dtype, np.floating) and levels.max() <= 1 else 128
            out = mask >= mid
            logger.warning(
                "Mask %s is not binary (%d grey levels from %s to %s): binarised at >= %s "
                "(%.1f%% of the pixels are the object).", source, len(levels), levels.min(),
                levels.max(), mid, 100.0 * out.mean())
    share = float(out.mean()) if out.size else 0.0
    if share >= WHOLE_IMAGE_SHARE:
        logger.warning("Mask %s covers %.1f%% of its image: is it inverted or not a mask of "
                       "one object?", source, 100.0 * share)
    return out
