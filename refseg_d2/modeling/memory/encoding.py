"""
Encoding references into instance prototypes (the authors' ``COCOMemoryFillCropDataset`` and
``forward_fill_memory``), with the frozen
encoder of the model and, for box-only references, SAM 2's box prompting.

Per reference annotation: the context crop of the image is resized to the encoder input with
torch bicubic (no antialias), its mask crop with bilinear; the encoder's patch features are
averaged with the mask resized to the patch grid by nearest (top-left) sampling as weights.

Shape shorthand: R annotations of an image, S encoder input side, g = S / patch, D features.
"""
import hashlib

import torch
import torch.nn.functional as F

from ...config import declare_choices
from .. import ops
from .records import ReferenceRecord

BOX_MASK_SOURCES = declare_choices("MEMORY.BOX_MASK_SOURCE", ("sam2", "box"))


def _distinct_references(windows, masks):
    """
    The annotations of an image to encode: one per distinct (crop window, mask), so that copies
    of an annotation (CD-FSOD repeats an image's first one up to K times) are encoded once.

    Args:
        windows (list): R crop windows; masks: (R, H, W).
    Returns:
        (list[int] rows to encode, (R,) int64 tensor: the position in that list of each row).
    """
    rows, index_of, seen = [], [], {}
    for r, (x0, y0, x1, y1) in enumerate(windows):
        crop = masks[r, y0:y1, x0:x1]
        key = (x0, y0, x1, y1, hashlib.sha1(crop.cpu().numpy().tobytes()).digest())
        if key not in seen:
            seen[key] = len(rows)
            rows.append(r)
        index_of.append(seen[key])
    return rows, torch.tensor(index_of, dtype=torch.int64, device=masks.device)


class ReferenceEncoder:
    """Turns reference inputs (from ``RefSegReferenceMapper``) into :class:`ReferenceRecord` s."""

    def __init__(self, encoder, prompter, box_mask_source="sam2", upsample_chunk=64,
                 crops_per_batch=16):
        """
        Args:
            encoder (nn.Module): the semantic encoder (``refseg_d2.modeling.encoders``).
            prompter (SAM2Prompter): SAM 2, for the masks of box-only references.
            box_mask_source (str): "sam2" (box prompt) or "box" (the filled box rectangle).
            upsample_chunk (int): SAM 2 masks upsampled to the image size at a time.
            crops_per_batch (int): reference crops encoded together (0: all crops of an image);
                the features do not depend on it.
        """
        if box_mask_source not in BOX_MASK_SOURCES:
            raise ValueError(
                "MODEL.REFSEG.MEMORY.BOX_MASK_SOURCE must be one of {}, got {!r}".format(
                    BOX_MASK_SOURCES, box_mask_source
                )
            )
        self.encoder = encoder
        self.prompter = prompter
        self.box_mask_source = box_mask_source
        self.upsample_chunk = upsample_chunk
        self.crops_per_batch = crops_per_batch

    @property
    def device(self):
        return self.prompter.pixel_mean.device

    @torch.no_grad()
    def __call__(self, batched_inputs):
        """
        Args:
            batched_inputs (list[dict]): from ``RefSegReferenceMapper``, each with
                "file_name"; "image": (3, H, W) uint8 RGB at the original size;
                "instances": Instances with gt_classes (R,), gt_masks (R, H, W) bool,
                has_mask (R,) bool, gt_boxes (R, 4) xyxy, crop_windows (R, 4) int64,
                ann_index (R,) and optionally sources (R dicts of the records' "box",
                "segmentation" and "name"); "sam_image": (3, S', S') uint8 when some has_mask is False;
                optionally "refseg_index" (the image's position in the reference datasets).
        Returns:
            list[ReferenceRecord]: one per annotation, in input then annotation order.
        """
        records = []
        for inputs in batched_inputs:
            inst = inputs["instances"]
            means, valid, from_sam2 = self._encode_image(inputs)
            sources = inst.sources if inst.has("sources") else [{}] * len(inst)
            for r in range(len(inst)):
                records.append(ReferenceRecord(
                    file_name=inputs.get("file_name"),
                    dataset_index=int(inputs.get("refseg_index", 0)),
                    annotation_index=int(inst.ann_index[r]),
                    label=int(inst.gt_classes[r]),
                    feature=means[r].cpu(),
                    valid=bool(valid[r]),
                    mask_from_sam2=bool(from_sam2[r]),
                    crop_window=tuple(int(v) for v in inst.crop_windows[r].tolist()),
                    image_size=tuple(int(v) for v in inst.image_size),
                    **sources[r],
                ))
        return records

    def _encode_image(self, inputs):
        """(R, D) instance means, (R,) valid and (R,) mask-from-SAM-2 flags of one image."""
        image = inputs["image"].to(self.device).to(torch.float32) / 255.0
        inst = inputs["instances"].to(self.device)
        masks = inst.gt_masks       # (R, H, W) bool; only crops are made float
        from_sam2 = torch.zeros_like(inst.has_mask)
        if self.box_mask_source == "sam2" and not bool(inst.has_mask.all()):
            from_sam2 = ~inst.has_mask
            masks = masks.clone()
            masks[from_sam2] = self._masks_from_boxes(inputs, inst.gt_boxes.tensor[from_sam2])
        if len(inst) == 0:
            empty = torch.zeros((0,), dtype=torch.bool, device=self.device)
            return torch.zeros((0, self.encoder.feature_dim), device=self.device), empty, empty
        windows = inst.crop_windows.tolist()
        distinct, index_of = _distinct_references(windows, masks)
        means = torch.empty((len(distinct), self.encoder.feature_dim), device=self.device)
        valid = torch.empty((len(distinct),), dtype=torch.bool, device=self.device)
        step = self.crops_per_batch or len(distinct)
        for start in range(0, len(distinct), step):
            part = distinct[start : start + step]
            means[start : start + len(part)], valid[start : start + len(part)] = self._encode_crops(
                image, masks, [windows[r] for r in part], part
            )
        return means[index_of], valid[index_of], from_sam2

    def _encode_crops(self, image, masks, windows, rows):
        """
        Instance means of a batch of crops: image (3, H, W) in [0, 1], masks (R, H, W) bool,
        the crop windows of ``rows`` -> (B, D) means and (B,) valid.
        """
        size = self.encoder.input_size
        crops, mask_crops = [], []
        for r, (x0, y0, x1, y1) in zip(rows, windows):
            crop = image[None, :, y0:y1, x0:x1]
            crops.append(F.interpolate(crop, size=(size, size), mode="bicubic"))
            mask_crop = masks[r][None, None, y0:y1, x0:x1].to(torch.float32)
            mask_crops.append(F.interpolate(mask_crop, size=(size, size), mode="bilinear"))
        soft = torch.cat(mask_crops)
        with self.prompter.autocast():  # ACCEL.AMP, as for targets
            feats = self.encoder(torch.cat(crops)).float()
        weights = F.interpolate(soft, size=feats.shape[-2:], mode="nearest").reshape(len(crops), -1)
        return ops.soft_masked_average(feats.flatten(2).transpose(1, 2), weights)

    def _masks_from_boxes(self, inputs, boxes):
        """SAM 2 masks (R, H, W) bool at the original size for xyxy boxes in original pixels."""
        if "sam_image" not in inputs:
            raise ValueError(
                "Reference image {} has box-only annotations but no 'sam_image'".format(
                    inputs.get("file_name", "?")
                )
            )
        return masks_from_boxes(self.prompter, inputs["sam_image"], boxes,
                                tuple(inputs["image"].shape[-2:]), self.upsample_chunk)


def masks_from_boxes(prompter, sam_image, boxes, size, upsample_chunk=64, box_batch=0):
    """
    SAM 2's single-mask box prompts, as the memory stage masks box-only references: the
    squashed image encoded once, the boxes decoded (under the prompter's ACCEL.AMP autocast),
    the logits upsampled to ``size`` and thresholded at 0.

    Args:
        prompter (SAM2Prompter): SAM 2.
        sam_image: (3, S, S) uint8 image squashed to SAM 2's input side S.
        boxes: (R, 4) xyxy boxes in the pixels of the image at ``size``.
        size (tuple): (H, W) of the image and of the masks.
        upsample_chunk (int): masks upsampled at a time.
        box_batch (int): boxes decoded together (0: all); the masks do not depend on it.
    Returns:
        (R, H, W) bool on the prompter's device.
    """
    device = prompter.pixel_mean.device
    height, width = size
    side = prompter.input_size
    image = sam_image.to(device).to(torch.float32)[None] / 255.0
    boxes = boxes.to(device) * torch.tensor([side / width, side / height] * 2, device=device)
    with prompter.autocast():  # ACCEL.AMP, as for targets
        embedding, high_res = prompter.encode_image(image)
    out = [torch.zeros((0, height, width), dtype=torch.bool, device=device)]
    step = box_batch or max(len(boxes), 1)
    for start in range(0, len(boxes), step):
        with prompter.autocast():
            logits = prompter.decode_boxes(embedding, high_res, boxes[start : start + step]).float()
        out.append(ops.upsample_mask_logits(logits, size, upsample_chunk))
    return torch.cat(out)
