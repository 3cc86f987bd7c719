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

from detectron2.utils.registry import Registry

from ...config import declare_choices
from ...utils.registry import register_as, registered
from .. import ops
from ..precision import amp_dtype
from .records import ReferenceRecord

BOX_MASK_SOURCES = declare_choices("MEMORY.BOX_MASK_SOURCE", ("sam2", "box"))

REFSEG_REFERENCE_MASK_REGISTRY = Registry("REFSEG_REFERENCE_MASK")
REFSEG_REFERENCE_MASK_REGISTRY.__doc__ = """
Where the mask of each reference comes from (``MODEL.REFSEG.MEMORY.MASK_SOURCE``). A registered
class built with ``cls(box_mask_source, amp_dtype)`` and called with ``(prompter, inputs)``
(inputs from ``RefSegReferenceMapper``) -> ((R, H, W) bool masks at the image size, (R,) bool
mask-made-by-SAM-2 flags).
"""


def build_mask_source(cfg):
    """The reference-mask source named by ``MODEL.REFSEG.MEMORY.MASK_SOURCE``."""
    m = cfg.MODEL.REFSEG.MEMORY
    cls = registered(REFSEG_REFERENCE_MASK_REGISTRY, "MODEL.REFSEG.MEMORY.MASK_SOURCE",
                     m.MASK_SOURCE)
    return cls(m.BOX_MASK_SOURCE, amp_dtype(m.SAM2_AMP, "MEMORY.SAM2_AMP"))


@register_as(REFSEG_REFERENCE_MASK_REGISTRY, "annotation")
class AnnotationMasks:
    """
    The annotation's own mask; a box-only annotation gets SAM 2's mask of its box
    (``BOX_MASK_SOURCE`` "sam2") or the box rectangle made by the mapper ("box").
    """

    def __init__(self, box_mask_source="sam2", amp_dtype=None):
        if box_mask_source not in BOX_MASK_SOURCES:
            raise ValueError(
                "MODEL.REFSEG.MEMORY.BOX_MASK_SOURCE must be one of {}, got {!r}".format(
                    BOX_MASK_SOURCES, box_mask_source
                )
            )
        self.box_mask_source = box_mask_source
        self.amp_dtype = amp_dtype

    def needs_sam2(self, has_mask):
        """(R,) bool: the references whose mask SAM 2 makes."""
        if self.box_mask_source == "sam2":
            return ~has_mask
        return torch.zeros_like(has_mask)

    def __call__(self, prompter, inputs):
        inst = inputs["instances"]
        masks = inst.gt_masks.to(prompter.pixel_mean.device)
        from_sam2 = self.needs_sam2(inst.has_mask.to(masks.device))
        if bool(from_sam2.any()):
            if "sam_image" not in inputs:
                raise ValueError(
                    "Reference image {} needs SAM 2 masks but has no 'sam_image'".format(
                        inputs.get("file_name", "?")))
            masks = masks.clone()
            masks[from_sam2] = masks_from_boxes(
                prompter, inputs["sam_image"], inst.gt_boxes.tensor[from_sam2].to(masks.device),
                tuple(masks.shape[-2:]), amp_dtype=self.amp_dtype)
        return masks, from_sam2


@register_as(REFSEG_REFERENCE_MASK_REGISTRY, "sam2_box")
class SAM2BoxMasks(AnnotationMasks):
    """Every reference masked by SAM 2 from its box, even where the annotation has a mask."""

    def needs_sam2(self, has_mask):
        return torch.ones_like(has_mask)


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


def records_of(batched_inputs, encode_image):
    """
    ReferenceRecords of reference inputs, given ``encode_image(inputs)`` -> ((R, D) means,
    (R,) valid, (R,) mask-from-SAM-2 flags) of one image: one record per annotation, in input
    then annotation order.
    """
    records = []
    for inputs in batched_inputs:
        inst = inputs["instances"]
        means, valid, from_sam2 = encode_image(inputs)
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


class ReferenceEncoder:
    """Turns reference inputs (from ``RefSegReferenceMapper``) into :class:`ReferenceRecord` s."""

    def __init__(self, encoder, prompter, mask_source=None, crops_per_batch=16):
        """
        Args:
            encoder (nn.Module): the semantic encoder (``refseg_d2.modeling.encoders``).
            prompter (SAM2Prompter): SAM 2, for the masks SAM 2 makes.
            mask_source: a ``REFSEG_REFERENCE_MASK_REGISTRY`` object (default: the annotation's
                mask, SAM 2's box mask for box-only annotations).
            crops_per_batch (int): reference crops encoded together (0: all crops of an image);
                the features do not depend on it.
        """
        self.encoder = encoder
        self.prompter = prompter
        self.mask_source = mask_source or AnnotationMasks()
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
                "segmentation" and "name"); "sam_image" (see the mapper) when SAM 2 masks some
                reference; optionally "refseg_index" (the image's position in the reference
                datasets).
        Returns:
            list[ReferenceRecord]: one per annotation, in input then annotation order.
        """
        return records_of(batched_inputs, self._encode_image)

    def _encode_image(self, inputs):
        """(R, D) instance means, (R,) valid and (R,) mask-from-SAM-2 flags of one image."""
        image = inputs["image"].to(self.device).to(torch.float32) / 255.0
        inst = inputs["instances"].to(self.device)
        masks, from_sam2 = self.mask_source(self.prompter, inputs)   # only crops are made float
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


def masks_from_boxes(prompter, sam_image, boxes, size, upsample_chunk=64, box_batch=0,
                     amp_dtype=None):
    """
    SAM 2's single-mask box prompts, as the memory stage masks references: the image encoded
    once, the boxes decoded (under the prompter's ACCEL.AMP autocast, or ``amp_dtype``), the
    logits upsampled to ``size`` as the prompter's interface does and thresholded at 0.

    Args:
        prompter (SAM2Prompter): SAM 2.
        sam_image: (3, S, S) or (3, H, W) uint8, the mapper's "sam_image" (see
            ``SAM2Prompter.prepare_image``).
        boxes: (R, 4) xyxy boxes in the pixels of the image at ``size``.
        size (tuple): (H, W) of the image and of the masks.
        upsample_chunk (int): masks upsampled at a time.
        box_batch (int): boxes decoded together (0: all); the masks do not depend on it.
        amp_dtype (torch.dtype or None): autocast of the SAM 2 forwards (MEMORY.SAM2_AMP;
            None: ACCEL.AMP).
    Returns:
        (R, H, W) bool on the prompter's device.
    """
    device = prompter.pixel_mean.device
    height, width = size
    boxes = prompter.input_boxes(boxes, size)
    with prompter.autocast(amp_dtype):
        embedding, high_res = prompter.encode_image(prompter.prepare_image(sam_image))
    out = [torch.zeros((0, height, width), dtype=torch.bool, device=device)]
    step = box_batch or max(len(boxes), 1)
    for start in range(0, len(boxes), step):
        with prompter.autocast(amp_dtype):
            logits = prompter.decode_boxes(embedding, high_res, boxes[start : start + step]).float()
        out.append(ops.upsample_mask_logits(logits, size, upsample_chunk,
                                            prompter.upsample_antialias))
    return torch.cat(out)


class WholeImageReferenceEncoder:
    """
    FSOD-VFM's references: the encoder sees the whole reference image (the mapper's
    "encoder_image"); each reference's mask (from the mask source) is resized to the token grid
    and its tokens averaged (``pooling.TokenGridPooling.reference_features``). SAM 2 is not
    applied under ACCEL.AMP here but under MEMORY.SAM2_AMP (FSOD-VFM: bf16).
    """

    def __init__(self, pooling, prompter, mask_source):
        self.pooling = pooling
        self.prompter = prompter
        self.mask_source = mask_source

    @torch.no_grad()
    def __call__(self, batched_inputs):
        """As :meth:`ReferenceEncoder.__call__`; inputs also carry "encoder_image"."""
        return records_of(batched_inputs, self._encode_image)

    def _encode_image(self, inputs):
        device = self.prompter.pixel_mean.device
        masks, from_sam2 = self.mask_source(self.prompter, inputs)
        if len(masks) == 0:
            empty = torch.zeros((0,), dtype=torch.bool, device=device)
            return torch.zeros((0, self.pooling.encoder.feature_dim), device=device), empty, empty
        feature_map = self.pooling.feature_maps([inputs])[0]
        means, valid = self.pooling.reference_features(feature_map, masks.to(device))
        return means, valid, from_sam2
