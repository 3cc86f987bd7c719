"""
The reference-independent part of the method: per target image, the proposal masks of a
proposal source (SAM 2 from a point grid, as "No Time to Train!", or from boxes, as FSOD-VFM;
``sources.py``) and their pooled DINOv2 features (``..pooling``).

Timer stages: "dinov2" (target features), "box_proposals" (the boxes of a box source: file
lookup or detector, and their selection), "sam2_image_encoder", "sam2_prompt_decoding" (the
prompts of the source: point grid with best-of-3 and predicted-IoU filter, or boxes),
"feature_pooling" (features pooled under the masks; NMS boxes).

Shape shorthand: N proposals, D feature dimension, h x w the low-resolution mask grid (S / 4 for
a SAM 2 input of S), L the pooling grid (h * w or the token grid), H x W the original image size.
"""
import contextlib

import torch

from .. import ops


class LogitMasks:
    """Proposal masks held as low-resolution logits, upsampled on demand."""

    def __init__(self, logits, max_pixels=1 << 28, antialias=True):
        """
        Args:
            logits: (N, h, w) float mask logits.
            max_pixels (int): full-size mask pixels upsampled at a time (FULL_MASKS.MAX_PIXELS;
                at least one mask).
            antialias (bool): antialiased bilinear upsampling (SAM2.INTERFACE "direct") or
                plain bilinear ("image_predictor").
        """
        self.logits = logits
        self.max_pixels = max_pixels
        self.antialias = antialias

    def _chunk(self, size):
        return max(1, self.max_pixels // max(1, size[0] * size[1]))

    def full(self, indices, size):
        """(k, H, W) bool: bilinear upsampling to ``size``, thresholded at 0."""
        return ops.upsample_mask_logits(self.logits[indices], size, self._chunk(size),
                                        self.antialias)

    def iter_full(self, indices, size):
        """The masks of ``full`` a chunk at a time: yields (start, (c, H, W) bool)."""
        return ops.iter_upsampled_masks(self.logits[indices], size, self._chunk(size),
                                        self.antialias)


class Proposals:
    """
    The proposals of one target image.

    Attributes:
        features: (N, D) unit-norm pooled features (zero for an empty mask).
        rank_scores: (N,) the order of the NMS and de-duplication (SAM 2's predicted IoUs for
            the point grid; decreasing in the source's order for boxes).
        boxes: (N, 4) boxes of the NMS (inclusive boxes on the low-resolution mask grid, or the
            proposal boxes).
        masks (LogitMasks): the masks, upsampled on demand.
        pooled_masks: (N, L) bool, the masks on the pooling grid.
        output_boxes: (N, 4) float XYXY boxes in original pixels reported for the detections,
            or None (the full-size masks' extents).
    """

    def __init__(self, features, rank_scores, boxes, masks, pooled_masks=None, output_boxes=None):
        self.features = features
        self.rank_scores = rank_scores
        self.boxes = boxes
        self.masks = masks
        self.pooled_masks = pooled_masks
        self.output_boxes = output_boxes

    def __len__(self):
        return self.rank_scores.shape[0]

    def full_masks(self, indices, size):
        """(k, H, W) bool full-resolution masks of the proposals ``indices`` (k,)."""
        return self.masks.full(indices, size)

    def iter_full_masks(self, indices, size):
        """:meth:`full_masks` a chunk at a time: yields (start, (c, H, W) bool)."""
        return self.masks.iter_full(indices, size)


class ProposalGenerator:
    """
    Target images -> :class:`Proposals`, with the model's proposal source, pooling and SAM 2
    prompter (shared objects, not copies).
    """

    def __init__(self, source, pooling, prompter, timer, max_pixels=1 << 28, given_boxes=None):
        """
        Args:
            source: a ``REFSEG_PROPOSAL_SOURCE_REGISTRY`` object (``sources.py``).
            pooling: a ``REFSEG_POOLING_REGISTRY`` object (``refseg_d2.modeling.pooling``).
            prompter (SAM2Prompter): SAM 2; its ``autocast()`` (ACCEL.AMP, ACCEL.TF32) covers
                the SAM 2 forwards.
            timer (StageTimer): where the stage times go.
            max_pixels (int): full-size mask pixels upsampled at a time (FULL_MASKS.MAX_PIXELS).
            given_boxes: the source of the inputs that carry their own "proposals"
                (``sources.GivenBoxesSource``).
        """
        self.source = source
        self.given_boxes = given_boxes
        self.pooling = pooling
        self.prompter = prompter
        self.timer = timer
        self.max_pixels = max_pixels

    @property
    def device(self):
        return self.prompter.pixel_mean.device

    def __call__(self, batched_inputs):
        """
        Args:
            batched_inputs (list[dict]): from ``RefSegTargetMapper``: "image" (3, S, S) or
                (3, H, W) uint8 RGB (see ``SAM2Prompter.prepare_image``), "height", "width"
                (the output size), "encoder_image" for the token-grid pooling, "image_id" for
                a boxes file, optionally "file_name" and "proposals" (boxes of the input that
                replace the source, see ``sources.GivenBoxesSource``).
        Returns:
            list[Proposals], one per input. The encoder encodes the images of the call together
            (the test loader's ACCEL.IMAGES_PER_BATCH; equal to one at a time up to float
            rounding).
        """
        if not batched_inputs:
            return []
        images = torch.cat([self._sam_image(x) for x in batched_inputs])
        with self.timer.stage("dinov2", self.device):
            feature_maps = self.pooling.feature_maps(batched_inputs, images)
        return [self._propose_one(inputs, image[None], feature_map)
                for inputs, image, feature_map in zip(batched_inputs, images, feature_maps)]

    def _sam_image(self, inputs):
        try:
            return self.prompter.prepare_image(inputs["image"])
        except ValueError as e:
            raise ValueError("Target {}: {}".format(inputs.get("file_name", "?"), e)) from e

    def _propose_one(self, inputs, image, feature_map):
        """image (1, 3, S, S) in [0, 1], feature_map (D, g, g) -> Proposals."""
        timer, dev = self.timer, self.device
        size = (int(inputs.get("height", image.shape[-2])), int(inputs.get("width", image.shape[-1])))
        source = self.given_boxes if "proposals" in inputs else self.source
        with timer.stage(source.stage, dev) if source.stage else contextlib.nullcontext():
            prompts = source.prompts(inputs, size)
        with timer.stage("sam2_image_encoder", dev), self.prompter.autocast():
            embedding, high_res = self.prompter.encode_image(image)
        with timer.stage("sam2_prompt_decoding", dev), self.prompter.autocast():
            logits, rank_scores, output_boxes = source.decode(self.prompter, prompts, embedding,
                                                              high_res, size)
        logits, rank_scores = logits.float(), rank_scores.float()
        masks = LogitMasks(logits, self.max_pixels, self.prompter.upsample_antialias)
        with timer.stage("feature_pooling", dev):
            features, pooled = self.pooling.pool(feature_map, masks, size)
            boxes = output_boxes if output_boxes is not None else ops.masks_to_boxes_inclusive(
                logits > 0)
        return Proposals(features, rank_scores, boxes, masks, pooled, output_boxes)
