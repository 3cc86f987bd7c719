"""
Feature pooling (``MODEL.REFSEG.POOLING``): how a mask becomes a DINOv2 feature, for targets and
for references. A registered class, built with ``cls(encoder)``, with:

- ``encoder_input(image, size)`` (static): what the target and reference mappers add as
  "encoder_image" for a PIL image (None: nothing, the encoder input is made from the SAM 2
  input);
- ``feature_maps(batched_inputs, sam_images)`` -> (B, D, g, g) target feature maps;
- ``pool(feature_map, masks, size)`` -> ((N, D) unit features, (N, L) bool masks on the pooling
  grid), for the N proposal masks (``proposals.LogitMasks``) of an image of ``size``;
- ``reference_encoder(prompter, mask_source, crops_per_batch)`` -> the callable that turns
  reference inputs into records (``memory.encoding``).

Registered:
- "mask_grid" ("No Time to Train!"): targets: the SAM 2 input resized (bicubic) to the encoder
  input, features upsampled (bilinear, antialiased) to the low-resolution mask grid and averaged
  under the mask logits > 0; references: crops with context (``memory.encoding``).
- "token_grid" (FSOD-VFM): whole images resized with Pillow as FSOD-VFM does (bicubic to the
  long side ``ENCODER.INPUT_SIZE`` floored to multiples of the patch, then squashed to the
  square input), tokens averaged under the full-size masks resized to the token grid as
  ``cv2.resize`` (bilinear) > 0.5 does (``ops.linear_resize_masks``); the target feature is
  normalised with eps 1e-2 (an empty mask gives the zero vector), a reference feature is the plain
  mean (a reference empty on the grid is skipped).
"""
import numpy as np
import torch
import torch.nn.functional as F
from detectron2.utils.registry import Registry
from PIL import Image

from ..utils.registry import register_as, registered
from . import ops

REFSEG_POOLING_REGISTRY = Registry("REFSEG_POOLING")
REFSEG_POOLING_REGISTRY.__doc__ = __doc__


def build_pooling(cfg, encoder):
    """The pooling named by ``MODEL.REFSEG.POOLING``."""
    return pooling_class(cfg)(encoder)


def pooling_class(cfg):
    """The registered class named by ``MODEL.REFSEG.POOLING`` (the mappers call its static parts)."""
    return registered(REFSEG_POOLING_REGISTRY, "MODEL.REFSEG.POOLING", cfg.MODEL.REFSEG.POOLING)


@register_as(REFSEG_POOLING_REGISTRY, "mask_grid")
class MaskGridPooling:
    """NTT's pooling on the low-resolution mask grid (see the module docstring)."""

    def __init__(self, encoder):
        self.encoder = encoder

    @staticmethod
    def encoder_input(image, size):
        return None

    def feature_maps(self, batched_inputs, sam_images):
        """sam_images (B, 3, S, S) in [0, 1] -> (B, D, g, g) float32."""
        size = self.encoder.input_size
        enc_in = F.interpolate(sam_images, size=(size, size), mode="bicubic", align_corners=False)
        return self.encoder(enc_in).float()

    def pool(self, feature_map, masks, size):
        """feature_map (D, g, g), masks: LogitMasks of (N, h, w) logits -> (N, D), (N, h * w)."""
        n, h, w = masks.logits.shape
        grid = F.interpolate(
            feature_map[None], size=(h, w), mode="bilinear", align_corners=False, antialias=True
        )[0]
        grid = grid.reshape(grid.shape[0], h * w).t()
        low_res = (masks.logits > 0).reshape(n, h * w)
        return ops.masked_average_features(low_res, grid), low_res

    def reference_encoder(self, prompter, mask_source, crops_per_batch):
        from .memory.encoding import ReferenceEncoder

        return ReferenceEncoder(self.encoder, prompter, mask_source, crops_per_batch=crops_per_batch)


def fsod_vfm_resize(image, size, patch):
    """
    FSOD-VFM's DINOv2 input of a PIL RGB image: Pillow bicubic to the long side ``size`` (the
    other side int-truncated), both sides floored to multiples of ``patch`` (at least one patch),
    then Pillow bicubic to size x size. Returns (3, size, size) uint8.
    """
    width, height = image.size
    if width >= height:
        new_w, new_h = size, int(size / (width / height))
    else:
        new_w, new_h = int(size * (width / height)), size
    new_w = max(new_w // patch, 1) * patch
    new_h = max(new_h // patch, 1) * patch
    image = image.resize((new_w, new_h), resample=Image.BICUBIC)
    image = image.resize((size, size), resample=Image.BICUBIC)
    return torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1).contiguous()


@register_as(REFSEG_POOLING_REGISTRY, "token_grid")
class TokenGridPooling:
    """FSOD-VFM's pooling on the encoder's token grid (see the module docstring)."""

    def __init__(self, encoder):
        self.encoder = encoder

    @staticmethod
    def encoder_input(image, size):
        return fsod_vfm_resize(image, size, 14)

    def feature_maps(self, batched_inputs, sam_images=None):
        """
        The inputs' "encoder_image" (3, E, E) uint8 -> (B, D, g, g) float32 (the SAM 2 inputs
        are not used).
        """
        for inputs in batched_inputs:
            if "encoder_image" not in inputs:
                raise ValueError(
                    "Image {} has no 'encoder_image': with MODEL.REFSEG.POOLING token_grid, inputs "
                    "must come from the refseg mappers built with the same config".format(
                        inputs.get("file_name", "?")))
        images = torch.stack([x["encoder_image"] for x in batched_inputs])
        device = self.encoder.pixel_mean.device
        return self.encoder(images.to(device).to(torch.float32) / 255.0).float()

    def grid_masks(self, masks, feature_map, size):
        """(N, L) bool: the full-size masks (LogitMasks) on the token grid of ``feature_map``."""
        grid = tuple(feature_map.shape[-2:])
        n = len(masks.logits)
        out = torch.zeros((n, grid[0] * grid[1]), dtype=torch.bool, device=feature_map.device)
        for start, full in masks.iter_full(torch.arange(n, device=masks.logits.device), size):
            out[start : start + full.shape[0]] = ops.linear_resize_masks(full, grid).flatten(1)
        return out

    def pool(self, feature_map, masks, size):
        """feature_map (D, g, g), masks: LogitMasks -> (N, D) features, (N, g * g) grid masks."""
        grid = self.grid_masks(masks, feature_map, size)
        tokens = feature_map.flatten(1).t()
        weights = grid.to(tokens.dtype)
        pooled = (weights @ tokens) / (weights.sum(dim=1, keepdim=True) + 1e-7)
        return F.normalize(pooled, dim=1, eps=1e-2), grid

    def reference_features(self, feature_map, masks):
        """
        feature_map (D, g, g), masks (R, H, W) bool at the image size -> (R, D) means and (R,)
        valid (False: the mask is empty on the token grid).
        """
        grid = ops.linear_resize_masks(masks, tuple(feature_map.shape[-2:])).flatten(1)
        weights = grid.to(torch.float32)
        counts = weights.sum(dim=1)
        sums = weights @ feature_map.flatten(1).t()
        return sums / counts.clamp(min=1.0)[:, None], counts > 0

    def reference_encoder(self, prompter, mask_source, crops_per_batch):
        from .memory.encoding import WholeImageReferenceEncoder

        return WholeImageReferenceEncoder(self, prompter, mask_source)
