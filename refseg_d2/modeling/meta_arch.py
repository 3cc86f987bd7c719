"""
RefSeg: the training-free, reference-based instance segmentation meta-architecture
("No Time to Train!", arXiv 2507.02798), as the authors' code runs it.

Per target image: SAM 2 proposes masks from a point grid, each mask's pooled DINOv2 feature is
matched to the class prototypes of the memory bank, class-aware NMS and semantic-aware soft
merging remove duplicates, and the top detections are returned at the original image size.
"""
import logging
import os

import torch
import torch.nn as nn
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.structures import Boxes, Instances
from detectron2.utils.logger import log_every_n_seconds

from ..utils.timing import StageTimer
from . import ops
from .encoders import build_encoder
from .memory import MemoryBank
from .proposal_cache import ProposalCache, Proposals
from .sam2_proposals import SAM2Proposer, build_sam2_model

logger = logging.getLogger(__name__)

_AMP_DTYPES = {"": None, "bf16": torch.bfloat16, "fp16": torch.float16}

# Sub-modules holding frozen foundation-model weights: loaded from their official files
# (the WEIGHTS keys), never saved in, nor read from, refseg checkpoints.
FROZEN_MODULES = ("encoder", "proposer")


@META_ARCH_REGISTRY.register()
class RefSeg(nn.Module):
    """
    Inference-only meta-architecture. ``forward`` segments target images with the current
    memory; :meth:`encode_references` turns reference annotations into instance prototypes
    (the memory-filling step, see ``refseg_d2.engine.memory_filling``).
    """

    @configurable
    def __init__(
        self,
        *,
        encoder,
        proposer,
        nms_thresh=0.5,
        nms_keep_factor=8,
        max_detections=100,
        merge_exponent=0.5,
        upsample_chunk=64,
        box_mask_source="sam2",
        cache=None,
        amp="",
        batch_encoder=False,
    ):
        """
        Args:
            encoder (nn.Module): semantic encoder, see ``refseg_d2.modeling.encoders``.
            proposer (SAM2Proposer): SAM 2 prompting.
            nms_thresh (float): box IoU threshold of the class-aware NMS.
            nms_keep_factor (int): NMS keeps at most nms_keep_factor * max_detections masks.
            max_detections (int): detections per image.
            merge_exponent (float): exponent of the soft-merging decay.
            upsample_chunk (int): masks upsampled to full size at a time.
            box_mask_source (str): "sam2" or "box", the mask of a box-only reference.
            cache (ProposalCache or None): cache of the reference-independent proposals.
            amp (str): "" (fp32), "bf16" or "fp16": autocast of the SAM 2 and DINOv2 forwards.
            batch_encoder (bool): encode all images of a batch with DINOv2 at once.
        """
        super().__init__()
        if box_mask_source not in ("sam2", "box"):
            raise ValueError("BOX_MASK_SOURCE must be 'sam2' or 'box', got {!r}".format(box_mask_source))
        self.encoder = encoder
        self.proposer = proposer
        self.memory = MemoryBank(encoder.feature_dim, encoder.signature())
        self.nms_thresh = nms_thresh
        self.nms_keep_factor = nms_keep_factor
        self.max_detections = max_detections
        self.merge_exponent = merge_exponent
        self.upsample_chunk = upsample_chunk
        self.box_mask_source = box_mask_source
        self.cache = cache
        if amp not in _AMP_DTYPES:
            raise ValueError("ACCEL.AMP must be one of {}, got {!r}".format(sorted(_AMP_DTYPES), amp))
        self.amp_dtype = _AMP_DTYPES[amp]
        self.batch_encoder = batch_encoder
        self.timer = StageTimer()
        self.register_state_dict_post_hook(_drop_frozen_weights)

    @classmethod
    def from_config(cls, cfg):
        r = cfg.MODEL.REFSEG
        sam = build_sam2_model(
            r.SAM2.CONFIG, r.SAM2.WEIGHTS, r.SAM2.INPUT_SIZE, r.RANDOM_INIT, r.RANDOM_INIT_SEED
        )
        encoder = build_encoder(cfg)
        proposer = SAM2Proposer(sam, r.POINTS_PER_SIDE, r.POINTS_PER_BATCH, r.PRED_IOU_THRESH)
        cache = None
        if r.CACHE.ENABLED:
            settings = {
                "sam2": proposer.signature(r.SAM2.CONFIG),
                "encoder": encoder.signature(),
                "amp": r.ACCEL.AMP,
                "batch_encoder": r.ACCEL.IMAGES_PER_BATCH > 1,
                "apply_exif": r.INPUT.APPLY_EXIF,
            }
            cache = ProposalCache(r.CACHE.DIR or os.path.join(cfg.OUTPUT_DIR, "proposal_cache"), settings)
            logger.info("Proposal cache: %s", cache.dir)
        if r.ACCEL.COMPILE:
            encoder.backbone.compile()
            sam.image_encoder.compile()
        return {
            "encoder": encoder,
            "proposer": proposer,
            "nms_thresh": r.NMS_THRESH,
            "nms_keep_factor": r.NMS_KEEP_FACTOR,
            "max_detections": r.MAX_DETECTIONS,
            "merge_exponent": r.MERGE_EXPONENT,
            "upsample_chunk": r.UPSAMPLE_CHUNK,
            "box_mask_source": r.MEMORY.BOX_MASK_SOURCE,
            "cache": cache,
            "amp": r.ACCEL.AMP,
            "batch_encoder": r.ACCEL.IMAGES_PER_BATCH > 1,
        }

    @property
    def device(self):
        return self.proposer.pixel_mean.device

    def train(self, mode=True):
        """The foundation models stay in eval mode: nothing here is ever trained."""
        return super().train(False)

    def forward(self, batched_inputs):
        """
        Args:
            batched_inputs (list[dict]): from :class:`RefSegTargetMapper`, each with
                "image": (3, S, S) uint8 RGB, the image squashed to the SAM 2 input size;
                "height", "width": the original size (the output size).
        Returns:
            list[dict]: {"instances": Instances} at (height, width) with pred_masks (n, H, W)
            bool, pred_boxes (inclusive mask extents), scores and pred_classes (memory class
            index = rank of the category id), n <= max_detections.
        """
        prototypes = self.memory.prototypes()
        outputs = []
        for inputs, proposals in zip(batched_inputs, self.propose(batched_inputs)):
            size = self.proposer.input_size
            height, width = int(inputs.get("height", size)), int(inputs.get("width", size))
            outputs.append({"instances": self._match(proposals, prototypes, height, width)})
            self.timer.num_images += 1
        log_every_n_seconds(logging.INFO, "Per-stage time: " + self.timer.summary(), n=60, name=__name__)
        return outputs

    def propose(self, batched_inputs):
        """
        The reference-independent part of the method: SAM 2 proposals and their pooled DINOv2
        features, read from the proposal cache when it has them.

        Returns:
            list[Proposals], one per input.
        """
        results = [self.cache.load(x, self.device) if self.cache else None for x in batched_inputs]
        todo = [i for i, r in enumerate(results) if r is None]
        if not todo:
            return results
        images = torch.stack([self._target_image(batched_inputs[i]) for i in todo])
        with self.timer.stage("dinov2", self.device), self._autocast():
            size = self.encoder.input_size
            enc_in = F.interpolate(images, size=(size, size), mode="bicubic", align_corners=False)
            if self.batch_encoder:
                feature_maps = self.encoder(enc_in).float()
            else:
                feature_maps = torch.cat([self.encoder(x[None]).float() for x in enc_in])
        for i, image, feature_map in zip(todo, images, feature_maps):
            results[i] = self._propose_one(image[None], feature_map)
            if self.cache:
                inputs = batched_inputs[i]
                full = results[i].full_masks(
                    torch.arange(len(results[i].pred_ious), device=self.device),
                    (int(inputs["height"]), int(inputs["width"])), self.upsample_chunk,
                )
                self.cache.save(inputs, results[i], full)
        return results

    def _target_image(self, inputs):
        """(3, S, S) float image in [0, 1] on the device."""
        image = inputs["image"].to(self.device)
        size = self.proposer.input_size
        if image.dim() != 3 or tuple(image.shape) != (3, size, size):
            raise ValueError(
                "Image {} has shape {}, expected (3, {s}, {s}): targets must come from "
                "RefSegTargetMapper".format(inputs.get("file_name", "?"), tuple(image.shape), s=size)
            )
        return image.to(torch.float32) / 255.0

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None)

    def _propose_one(self, image, feature_map):
        """image (1, 3, S, S) in [0, 1], feature_map (D, g, g) -> Proposals."""
        timer, dev = self.timer, self.device
        with timer.stage("sam2_image_encoder", dev), self._autocast():
            embedding, high_res = self.proposer.encode_image(image)
        with timer.stage("sam2_prompt_decoding", dev), self._autocast():
            logits, pred_ious = self.proposer.propose(embedding, high_res)
        logits, pred_ious = logits.float(), pred_ious.float()
        with timer.stage("matching", dev):
            n, h, w = logits.shape
            grid = F.interpolate(
                feature_map[None], size=(h, w), mode="bilinear", align_corners=False, antialias=True
            )[0]
            grid = grid.reshape(grid.shape[0], h * w).t()
            low_res = logits > 0
            features = ops.masked_average_features(low_res.reshape(n, h * w), grid)
            boxes = ops.masks_to_boxes_inclusive(low_res)
        return Proposals(features, pred_ious, boxes, logits=logits)

    def _match(self, proposals, prototypes, height, width):
        """Classify, NMS, upsample, merge: Proposals -> Instances at (height, width)."""
        timer, dev = self.timer, self.device
        with timer.stage("matching", dev):
            scores, labels = ops.classify(proposals.features, prototypes)
            keep = ops.class_aware_nms(
                proposals.boxes, proposals.pred_ious, labels, self.nms_thresh,
                self.nms_keep_factor * self.max_detections,
            )
            keep = keep[scores[keep] > 0]
        with timer.stage("postprocess", dev):
            masks = proposals.full_masks(keep, (height, width), self.upsample_chunk)
            nonempty = masks.flatten(1).any(dim=1)
            keep, masks = keep[nonempty], masks[nonempty]
        with timer.stage("merging", dev):
            merged = ops.semantic_soft_merge(
                masks, labels[keep], proposals.features[keep], scores[keep], self.merge_exponent
            )
            order = ops.select_top_k(merged, self.max_detections)
        result = Instances((height, width))
        result.pred_masks = masks[order]
        result.pred_boxes = Boxes(ops.masks_to_boxes_inclusive(result.pred_masks).to(torch.float32))
        result.scores = merged[order]
        result.pred_classes = labels[keep][order]
        return result

    @torch.no_grad()
    def encode_references(self, batched_inputs):
        """
        Instance prototypes of reference annotations.

        Args:
            batched_inputs (list[dict]): from :class:`RefSegReferenceMapper`, each with
                "image": (3, H, W) uint8 RGB at the original size;
                "instances": Instances with gt_classes (R,), gt_masks (R, H, W) bool,
                has_mask (R,) bool, gt_boxes (R, 4) xyxy and crop_windows (R, 4) int64;
                "sam_image": (3, S, S) uint8, present when some has_mask is False.
        Returns:
            list[dict], per input: "features" (R, D) soft-mask-weighted mean features (not
            normalised), "valid" (R,) bool (False: the mask misses every patch sample) and
            "sam2_masks" (R,) bool (mask made by SAM 2 from the box).
        """
        return [self._encode_reference_image(x) for x in batched_inputs]

    def _encode_reference_image(self, inputs):
        image = inputs["image"].to(self.device).to(torch.float32) / 255.0
        inst = inputs["instances"].to(self.device)
        masks = inst.gt_masks.to(torch.float32)
        from_sam2 = torch.zeros_like(inst.has_mask)
        if self.box_mask_source == "sam2" and not bool(inst.has_mask.all()):
            from_sam2 = ~inst.has_mask
            masks[from_sam2] = self._masks_from_boxes(inputs, inst.gt_boxes.tensor[from_sam2]).float()

        size = self.encoder.input_size
        crops, mask_crops = [], []
        for r, (x0, y0, x1, y1) in enumerate(inst.crop_windows.tolist()):
            crop = image[None, :, y0:y1, x0:x1]
            crops.append(F.interpolate(crop, size=(size, size), mode="bicubic"))
            mask_crop = masks[r][None, None, y0:y1, x0:x1]
            mask_crops.append(F.interpolate(mask_crop, size=(size, size), mode="bilinear"))
        if not crops:
            empty = torch.zeros((0,), dtype=torch.bool, device=self.device)
            return {
                "features": torch.zeros((0, self.encoder.feature_dim), device=self.device),
                "valid": empty,
                "sam2_masks": empty,
            }
        num = len(crops)
        soft = torch.cat(mask_crops)
        feats = self.encoder(torch.cat(crops))
        grid = feats.shape[-2:]
        weights = F.interpolate(soft, size=grid, mode="nearest").reshape(num, -1)
        feats = feats.flatten(2).transpose(1, 2)
        means, valid = ops.soft_masked_average(feats, weights)
        return {"features": means, "valid": valid, "sam2_masks": from_sam2}

    def _masks_from_boxes(self, inputs, boxes):
        """SAM 2 masks (R, H, W) bool at the original size for xyxy boxes in original pixels."""
        if "sam_image" not in inputs:
            raise ValueError(
                "Reference image {} has box-only annotations but no 'sam_image'".format(
                    inputs.get("file_name", "?")
                )
            )
        height, width = inputs["image"].shape[-2:]
        size = self.proposer.input_size
        sam_image = inputs["sam_image"].to(self.device).to(torch.float32)[None] / 255.0
        scale = torch.tensor([size / width, size / height] * 2, device=self.device)
        embedding, high_res = self.proposer.encode_image(sam_image)
        logits = self.proposer.masks_from_boxes(embedding, high_res, boxes * scale)
        return ops.upsample_mask_logits(logits, (height, width), self.upsample_chunk)


def _drop_frozen_weights(module, state_dict, prefix, local_metadata):
    for key in list(state_dict.keys()):
        if key.startswith(tuple(prefix + m + "." for m in FROZEN_MODULES)):
            del state_dict[key]
