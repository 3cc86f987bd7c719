"""The named record of one encoded reference (one shot of a class)."""
from dataclasses import dataclass
from typing import Optional, Tuple

import torch


@dataclass
class ReferenceRecord:
    """
    One reference annotation after encoding.

    Attributes:
        file_name (str): its image file (None for an image given as an array).
        dataset_index (int): position of its image in the reference dataset(s) (memory order).
        annotation_index (int): position of the annotation in its image's "annotations".
        label (int): contiguous class index.
        feature (Tensor): (D,) soft-mask-weighted mean feature (not normalised), on CPU.
        valid (bool): False when the mask covers no encoder patch sample (no prototype).
        mask_from_sam2 (bool): the mask was made by SAM 2 from the box (box-only annotation).
        crop_window (tuple): (x0, y0, x1, y1), the encoded crop is image[y0:y1, x0:x1].
        image_size (tuple): (H, W) of the image the crop window refers to.
        box (list or None): [x0, y0, x1, y1] float box of the annotation (XYXY).
        segmentation (dict or None): its mask as COCO RLE with str counts at the image size;
            None for a box-only annotation.
        name (str or None): how the user named the reference (e.g. "masks[2] (class 'dog')");
            None: "annotation <i> of <file_name>".
    """

    file_name: str
    dataset_index: int
    annotation_index: int
    label: int
    feature: torch.Tensor
    valid: bool
    mask_from_sam2: bool
    crop_window: Tuple[int, int, int, int]
    image_size: Tuple[int, int]
    box: Optional[list] = None
    segmentation: Optional[dict] = None
    name: Optional[str] = None

    @property
    def order(self):
        """Sort key of the memory order: dataset order, then annotation order."""
        return (self.dataset_index, self.annotation_index)

    def describe(self):
        """The reference as messages name it."""
        if self.name is not None:
            return self.name
        return "annotation {} of {}".format(self.annotation_index, self.file_name)

    def provenance(self):
        """
        Where the reference comes from: a dict with "file_name", "annotation", "box" (XYXY),
        "crop_window" and "segmentation" (COCO RLE at the image size; None when box-only).
        """
        return {
            "file_name": self.file_name,
            "annotation": int(self.annotation_index),
            "box": None if self.box is None else list(self.box),
            "crop_window": [int(v) for v in self.crop_window],
            "segmentation": self.segmentation,
        }


def record_statistics(records, memory, num_images, seconds):
    """
    The statistics of a memory built from ``records``.

    Returns:
        dict: "images" (``num_images``), "references" (annotations encoded), "sam2_masks" (masks
        made by SAM 2 from boxes), "skipped" (references covering no patch sample), "seconds"
        and "checksum" (sum of the memory's features).
    """
    return {
        "images": num_images,
        "references": len(records),
        "sam2_masks": sum(r.mask_from_sam2 for r in records),
        "skipped": sum(not r.valid for r in records),
        "seconds": seconds,
        "checksum": memory.checksum(),
    }
