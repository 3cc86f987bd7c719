"""
Semantic encoders: frozen backbones that turn a square image into a grid of patch features.

The registered object is called with ``obj(cfg)`` and returns an ``nn.Module`` with:
    ``feature_dim`` (int), ``patch_size`` (int), ``input_size`` (int),
    ``signature()`` -> dict identifying what the features depend on, and
    ``forward(images)``: images (B, 3, S, S) float RGB in [0, 1], S = input_size
    -> features (B, D, S / patch, S / patch); the forward applies the precision settings
    ``MODEL.REFSEG.ACCEL.AMP`` / ``ACCEL.TF32`` itself (see ``refseg_d2.modeling.precision``).
"""
import logging
import types

import torch
import torch.nn as nn
import torch.nn.functional as F
from detectron2.utils.registry import Registry

from ..config import declare_choices
from .precision import amp_dtype, precision
from .weights import load_state_dict_file, load_weights_strict, random_init_rng

REFSEG_ENCODER_REGISTRY = Registry("REFSEG_ENCODER")
REFSEG_ENCODER_REGISTRY.__doc__ = __doc__

logger = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# name -> (dinov2 constructor, extra constructor arguments); the official hub settings.
_DINOV2_ARCHS = {
    "dinov2_vits14": ("vit_small", {}),
    "dinov2_vitb14": ("vit_base", {}),
    "dinov2_vitl14": ("vit_large", {}),
    "dinov2_vitg14": ("vit_giant2", {"ffn_layer": "swiglufused"}),
}

# ENCODER.ATTENTION: "sdpa" runs each block's attention as one fused
# ``scaled_dot_product_attention`` (the same softmax(q k^T * scale) v, without the N x N matrix in
# memory: about 1.5x faster for ViT-S/14 at 518 px on a 2-core CPU); "official" keeps DINOv2's
# own forward (explicit matmuls and softmax on a CPU, xFormers where it is installed).
ATTENTIONS = declare_choices("ENCODER.ATTENTION", ("sdpa", "official"))


def fused_attention(attn, x, attn_bias=None):
    """
    The forward of a DINOv2 ``Attention`` block with the fused kernel: qkv projection, heads,
    ``softmax(q k^T * attn.scale) v``, output projection.

    Args:
        attn (dinov2.layers.attention.Attention): its ``qkv``, ``proj``, ``num_heads``, ``scale``.
        x: (B, N, C) tokens.
        attn_bias: must be None (DINOv2 passes one only for nested-tensor inputs, which the
            encoder never builds); with one, the block's own forward runs.
    Returns:
        (B, N, C).
    """
    if attn_bias is not None:
        return type(attn).forward(attn, x, attn_bias)
    b, n, c = x.shape
    qkv = attn.qkv(x).reshape(b, n, 3, attn.num_heads, c // attn.num_heads).permute(2, 0, 3, 1, 4)
    out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], scale=attn.scale)
    return attn.proj_drop(attn.proj(out.transpose(1, 2).reshape(b, n, c)))


def build_encoder(cfg):
    """Build the encoder named by ``cfg.MODEL.REFSEG.ENCODER.NAME``."""
    name = cfg.MODEL.REFSEG.ENCODER.NAME
    if name not in REFSEG_ENCODER_REGISTRY:
        raise KeyError(
            "MODEL.REFSEG.ENCODER.NAME={!r} is not registered; known encoders: {}".format(
                name, sorted(k for k, _ in REFSEG_ENCODER_REGISTRY)
            )
        )
    return REFSEG_ENCODER_REGISTRY.get(name)(cfg)


class DinoV2Encoder(nn.Module):
    """
    A frozen DINOv2 ViT (no register tokens). Features are the last layer's patch tokens (the
    CLS token dropped), after the final LayerNorm (``x_norm_patchtokens``, as NTT) or, with
    ``final_norm`` False, before it (``get_intermediate_layers(n=1, norm=False)``, as FSOD-VFM).
    """

    patch_size = 14

    def __init__(self, name, weights, input_size, random_init=False, seed=0, amp="", tf32=False,
                 final_norm=True, attention="sdpa"):
        """
        Args:
            name (str): one of dinov2_vits14, dinov2_vitb14, dinov2_vitl14, dinov2_vitg14.
            weights (str): path to the official ``<name>_pretrain.pth`` (a plain state dict).
            input_size (int): side of the square input, a multiple of 14.
            random_init (bool): allow an empty ``weights`` (random initialisation).
            seed (int): seed of the random initialisation.
            amp (str): "" (fp32), "bf16" or "fp16": autocast of the forward (ACCEL.AMP).
            tf32 (bool): allow TF32 in the forward's CUDA matmuls (ACCEL.TF32).
            final_norm (bool): apply the final LayerNorm to the tokens (ENCODER.FINAL_NORM).
            attention (str): "sdpa" or "official" (ENCODER.ATTENTION, see :data:`ATTENTIONS`).
        """
        super().__init__()
        if attention not in ATTENTIONS:
            raise ValueError("MODEL.REFSEG.ENCODER.ATTENTION must be one of {}, got {!r}".format(
                ATTENTIONS, attention))
        try:
            from dinov2.models import vision_transformer as dinov2_vit
        except ImportError as e:
            raise ImportError(
                "DINOv2's model code is not installed. Install it without its dependencies "
                "(its metadata pins torch 2.0): pip install --no-deps dinov2==0.0.1.dev2"
            ) from e

        if input_size % self.patch_size != 0:
            raise ValueError(
                "MODEL.REFSEG.ENCODER.INPUT_SIZE={} is not a multiple of the patch size {}".format(
                    input_size, self.patch_size
                )
            )
        constructor, extra = _DINOV2_ARCHS[name]
        with random_init_rng(seed):
            self.backbone = getattr(dinov2_vit, constructor)(
                patch_size=self.patch_size,
                img_size=518,
                init_values=1e-5,
                block_chunks=0,
                **extra,
            )
        self.name = name
        self.final_norm = final_norm
        self.amp_dtype = amp_dtype(amp)
        self.tf32 = tf32
        self.input_size = input_size
        self.feature_dim = self.backbone.embed_dim
        if weights:
            state = load_state_dict_file(weights, what="DINOv2 ({})".format(name))
            load_weights_strict(
                self.backbone, state, weights, "DINOv2 " + name,
                "MODEL.REFSEG.ENCODER.WEIGHTS / ENCODER.NAME",
            )
            logger.info("Loaded DINOv2 %s weights from %s", name, weights)
        elif random_init:
            logger.warning("DINOv2 %s is RANDOMLY INITIALISED (MODEL.REFSEG.RANDOM_INIT)", name)
        else:
            raise ValueError(
                "MODEL.REFSEG.ENCODER.WEIGHTS is empty: set it to the official "
                "{}_pretrain.pth (see docs/INSTALL.md, 'Checkpoints'), or set "
                "MODEL.REFSEG.RANDOM_INIT True for a random-weight run".format(name)
            )
        self.backbone.eval()
        if attention == "sdpa":
            for block in self.backbone.blocks:
                block.attn.forward = types.MethodType(fused_attention, block.attn)
        # identifies the weights in saved memories (a memory from other weights is refused)
        self.fingerprint = float(
            self.backbone.patch_embed.proj.weight.detach().double().abs().sum())
        for p in self.backbone.parameters():
            p.requires_grad_(False)
        self.register_buffer("pixel_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), False)

    def signature(self):
        signature = {
            "name": self.name,
            "input_size": self.input_size,
            "dim": self.feature_dim,
            "weights_fingerprint": self.fingerprint,
        }
        if not self.final_norm:
            signature["final_norm"] = False
        return signature

    def forward(self, images):
        """
        Args:
            images: (B, 3, S, S) RGB in [0, 1].
        Returns:
            (B, D, S / 14, S / 14) features (in the autocast dtype under ACCEL.AMP).
        """
        b, _, height, width = images.shape
        x = (images - self.pixel_mean) / self.pixel_std
        with precision(x.device.type, self.amp_dtype, self.tf32):
            if self.final_norm:
                tokens = self.backbone.forward_features(x)["x_norm_patchtokens"]
            else:
                tokens = self.backbone.get_intermediate_layers(x, n=1, norm=False)[0]
        grid_h, grid_w = height // self.patch_size, width // self.patch_size
        return tokens.transpose(1, 2).reshape(b, self.feature_dim, grid_h, grid_w)


def _make_dinov2_builder(name):
    def builder(cfg):
        r = cfg.MODEL.REFSEG
        return DinoV2Encoder(
            name,
            r.ENCODER.WEIGHTS,
            r.ENCODER.INPUT_SIZE,
            random_init=r.RANDOM_INIT,
            amp=r.ACCEL.AMP,
            tf32=r.ACCEL.TF32,
            final_norm=r.ENCODER.FINAL_NORM,
            attention=r.ENCODER.ATTENTION,
        )

    builder.__name__ = name
    builder.__doc__ = "DINOv2 {} (official weights: {}_pretrain.pth).".format(name, name)
    return builder


for _name in _DINOV2_ARCHS:
    REFSEG_ENCODER_REGISTRY.register(_make_dinov2_builder(_name))

