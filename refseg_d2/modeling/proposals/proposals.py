"""
The reference-independent part of the method: per target image, SAM 2's kept proposals and
their pooled DINOv2 features (the first half of the authors'
``Sam2MatchingBaselineNoAMG.forward_test``: point grid, best-of-3, predicted-IoU filter, mask
pooling).

Timer stages: "dinov2" (target features), "sam2_image_encoder", "sam2_prompt_decoding" (the
point grid, best-of-3, predicted-IoU filter), "feature_pooling" (features on the mask grid,
mask-pooled and normalised; low-resolution boxes).

Shape shorthand: N kept proposals, D feature dimension, h x w the low-resolution mask grid
(S / 4 for a SAM 2 input of S), H x W the original image size.
"""
import torch
import torch.nn.functional as F

from .. import ops


class LogitMasks:
    """Proposal masks held as low-resolution logits, upsampled on demand."""

    def __init__(self, logits, max_pixels=1 << 28):
        """
        Args:
            logits: (N, h, w) float mask logits.
            max_pixels (int): full-size mask pixels upsampled at a time (FULL_MASKS.MAX_PIXELS;
                at least one mask).
        """
        self.logits = logits
        self.max_pixels = max_pixels

    def _chunk(self, size):
        return max(1, self.max_pixels // max(1, size[0] * size[1]))

    def full(self, indices, size):
        """(k, H, W) bool: bilinear + antialias upsampling to ``size``, thresholded at 0."""
        return ops.upsample_mask_logits(self.logits[indices], size, self._chunk(size))

    def iter_full(self, indices, size):
        """The masks of ``full`` a chunk at a time: yields (start, (c, H, W) bool)."""
        return ops.iter_upsampled_masks(self.logits[indices], size, self._chunk(size))


class Proposals:
    """
    The proposals of one target image.

    Attributes:
        features: (N, D) unit-norm pooled DINOv2 features (zero for an empty mask).
        pred_ious: (N,) SAM 2 predicted IoUs.
        boxes: (N, 4) int64 inclusive boxes on the low-resolution mask grid.
        masks (LogitMasks): the masks, upsampled on demand.
    """

    def __init__(self, features, pred_ious, boxes, masks):
        self.features = features
        self.pred_ious = pred_ious
        self.boxes = boxes
        self.masks = masks

    def __len__(self):
        return self.pred_ious.shape[0]

    def full_masks(self, indices, size):
        """(k, H, W) bool full-resolution masks of the proposals ``indices`` (k,)."""
        return self.masks.full(indices, size)

    def iter_full_masks(self, indices, size):
        """:meth:`full_masks` a chunk at a time: yields (start, (c, H, W) bool)."""
        return self.masks.iter_full(indices, size)


class ProposalGenerator:
    """
    Target images -> :class:`Proposals`, with the encoder and SAM 2 prompter of the model (shared
    modules, not copies).
    """

    def __init__(self, encoder, prompter, timer, max_pixels=1 << 28):
        """
        Args:
            encoder (nn.Module): the semantic encoder (it applies its own precision settings).
            prompter (SAM2Prompter): SAM 2; its ``autocast()`` (ACCEL.AMP, ACCEL.TF32) covers
                the SAM 2 forwards.
            timer (StageTimer): where the stage times go.
            max_pixels (int): full-size mask pixels upsampled at a time (FULL_MASKS.MAX_PIXELS).
        """
        self.encoder = encoder
        self.prompter = prompter
        self.timer = timer
        self.max_pixels = max_pixels

    @property
    def device(self):
        return self.prompter.pixel_mean.device

    def __call__(self, batched_inputs):
        """
        Args:
            batched_inputs (list[dict]): from ``RefSegTargetMapper``: "image" (3, S, S) uint8
                RGB, "height", "width" (the output size), optionally "file_name".
        Returns:
            list[Proposals], one per input. DINOv2 encodes the images of the call together
            (the test loader's ACCEL.IMAGES_PER_BATCH; equal to one at a time up to float
            rounding).
        """
        if not batched_inputs:
            return []
        images = torch.stack([self._target_image(x) for x in batched_inputs])
        with self.timer.stage("dinov2", self.device):
            size = self.encoder.input_size
            enc_in = F.interpolate(images, size=(size, size), mode="bicubic", align_corners=False)
            feature_maps = self.encoder(enc_in).float()
        return [self._propose_one(image[None], feature_map)
                for image, feature_map in zip(images, feature_maps)]

    def _target_image(self, inputs):
        """(3, S, S) float image in [0, 1] on the device."""
        image = inputs["image"].to(self.device)
        size = self.prompter.input_size
        if image.dim() != 3 or tuple(image.shape) != (3, size, size):
            raise ValueError(
                "Image {} has shape {}, expected (3, {s}, {s}): targets must come from "
                "RefSegTargetMapper".format(inputs.get("file_name", "?"), tuple(image.shape), s=size)
            )
        return image.to(torch.float32) / 255.0

    def _propose_one(self, image, feature_map):
        """image (1, 3, S, S) in [0, 1], feature_map (D, g, g) -> Proposals."""
        timer, dev = self.timer, self.device
        with timer.stage("sam2_image_encoder", dev), self.prompter.autocast():
            embedding, high_res = self.prompter.encode_image(image)
        with timer.stage("sam2_prompt_decoding", dev), self.prompter.autocast():
            logits, pred_ious = self.prompter.decode_point_grid(embedding, high_res)
        logits, pred_ious = logits.float(), pred_ious.float()
        with timer.stage("feature_pooling", dev):
            n, h, w = logits.shape
            grid = F.interpolate(
                feature_map[None], size=(h, w), mode="bilinear", align_corners=False, antialias=True
            )[0]
            grid = grid.reshape(grid.shape[0], h * w).t()
            low_res = logits > 0
            features = ops.masked_average_features(low_res.reshape(n, h * w), grid)
            boxes = ops.masks_to_boxes_inclusive(low_res)
        return Proposals(features, pred_ious, boxes, LogitMasks(logits, self.max_pixels))
