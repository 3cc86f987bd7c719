"""The named record of one encoded reference (one shot of a class)."""
from dataclasses import dataclass
from typing import Tuple

import torch


@dataclass
class ReferenceRecord:
    """
    One reference annotation after encoding.

    Attributes:
        file_name (str): its image file.
        dataset_index (int): position of its image in the reference dataset(s) (memory order).
        annotation_index (int): position of the annotation in its image's "annotations".
        label (int): contiguous class index.
        feature (Tensor): (D,) soft-mask-weighted mean feature (not normalised), on CPU.
        valid (bool): False when the mask covers no encoder patch sample (no prototype).
        mask_from_sam2 (bool): the mask was made by SAM 2 from the box (box-only annotation).
        crop_window (tuple): (x0, y0, x1, y1), the encoded crop is image[y0:y1, x0:x1].
        image_size (tuple): (H, W) of the image the crop window refers to.
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

    @property
    def order(self):
        """Sort key of the memory order: dataset order, then annotation order."""
        return (self.dataset_index, self.annotation_index)
