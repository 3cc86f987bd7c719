"""Box geometry of annotations and reference crops, in Python floats and ints."""
from detectron2.structures import BoxMode


def bbox_xywh(ann):
    """The box of a dataset-dict annotation as [x, y, w, h] floats (any ``bbox_mode``)."""
    mode = ann.get("bbox_mode", BoxMode.XYWH_ABS)
    return [float(v) for v in BoxMode.convert(list(ann["bbox"]), mode, BoxMode.XYWH_ABS)]


def xywh_to_xyxy(box):
    """A COCO box [x, y, w, h] as [x0, y0, x1, y1] floats."""
    x, y, w, h = (float(v) for v in box)
    return [x, y, x + w, y + h]


def context_crop_window(box_xywh, width, height, context_ratio):
    """
    The reference crop around a box, computed exactly as the reference does (Python floats,
    ``int()`` truncation): the box corners are truncated to ints, the crop is a square of side
    (1 + context_ratio) * max(box w, box h) centred on the box, clipped to the image.

    Returns:
        (x0, y0, x1, y1) ints, the crop is image[y0:y1, x0:x1].
    """
    x, y, w, h = (float(v) for v in box_xywh)
    bx0, by0, bx1, by1 = int(x), int(y), int(x + w), int(y + h)
    cx, cy = (bx0 + bx1) * 0.5, (by0 + by1) * 0.5
    side = max(bx1 - bx0, by1 - by0) * (1.0 + context_ratio)
    return (
        max(0, int(cx - side * 0.5)),
        max(0, int(cy - side * 0.5)),
        min(width, int(cx + side * 0.5)),
        min(height, int(cy + side * 0.5)),
    )
