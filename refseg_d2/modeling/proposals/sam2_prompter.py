"""
Prompting a frozen SAM 2 the way the reference does: the image encoder and FPN, then the prompt
encoder and mask decoder on the raw image embedding, with a point grid (target proposals) or
boxes (masks of box-only references). SAM 2's ``no_mem_embed`` is NOT added to the embedding
(the reference skips it), which is why ``SAM2ImagePredictor`` is not used; the model's parts
are called directly (sam2 1.1.0, the only release this is checked against; another version is
refused). The FPN neck's sine position encodings are not computed: nothing here uses them
(the mask decoder takes the prompt encoder's dense positional encoding).

Shape shorthand: S = SAM 2 input size, e = S / 16 (embedding grid), h = w = S / 4 (mask grid),
P = number of prompts.

How SAM 2 is called (``MODEL.REFSEG.SAM2.INTERFACE``):
- "direct" ("No Time to Train!"): the image arrives squashed to S x S by the mapper (PIL
  bicubic); no ``no_mem_embed``; boxes are box prompts; mask logits are upsampled to the image
  with antialiasing.
- "image_predictor" (SAM 2's ``SAM2ImagePredictor``, as FSOD-VFM calls it): the image arrives at
  its own size and is resized here as the predictor's transforms do (float in [0, 1], bilinear
  with antialiasing); ``no_mem_embed`` is added to the embedding; a box is given as its two
  corners with point labels 2 and 3 (plus SAM 2's padding point), in coordinates normalised by
  the image size then scaled to S; mask logits are upsampled without antialiasing.

Two decoders give the same proposals (``MODEL.REFSEG.SAM2.DECODER``): "official" calls SAM 2's
``MaskDecoder.forward`` on every batch of prompts (the reference's computation); "shared"
(``prompt_decoding.SharedPromptDecoder``) runs the same modules but computes the image-side
work once per image and upscales only kept masks (equal up to float rounding, tested).
Under autocast the IoU head runs in fp32 in both, since it ranks and thresholds; under
ACCEL.AMP's mixed precision (:meth:`SAM2Prompter.autocast`) so do the prompt encoder, the
decoder's image-side projections and its two-way transformer (``..precision``).
"""
import contextlib
import functools
import importlib.metadata
import logging

import torch
import torch.nn as nn
import torch.nn.functional as F

from ...config import declare_choices
from ..encoders import IMAGENET_MEAN, IMAGENET_STD
from ..ops import point_grid, select_best_multimask
from ..precision import precision, run_sensitive
from ..weights import load_state_dict_file, load_weights_strict, random_init_rng
from .prompt_decoding import SharedPromptDecoder

logger = logging.getLogger(__name__)

# The sam2 release whose model internals (``forward_image``'s outputs, the neck's
# ``position_encoding``, the decoder's call signature) this module calls; install it with
# ``pip install sam2==1.1.0``.
SAM2_VERSION = "1.1.0"

DECODERS = declare_choices("SAM2.DECODER", ("shared", "official"))
INTERFACES = declare_choices("SAM2.INTERFACE", ("direct", "image_predictor"))


def check_sam2_version(version=None):
    """Raise ImportError unless the installed sam2 (or ``version``) is :data:`SAM2_VERSION`."""
    if version is None:
        try:
            version = importlib.metadata.version("sam2")
        except importlib.metadata.PackageNotFoundError as e:
            raise ImportError(
                "sam2 is not installed: pip install sam2=={} (see docs/INSTALL.md)".format(
                    SAM2_VERSION
                )
            ) from e
    if version != SAM2_VERSION:
        raise ImportError(
            "refseg_d2 calls SAM 2 internals of sam2=={} but sam2=={} is installed: "
            "pip install sam2=={}".format(SAM2_VERSION, version, SAM2_VERSION)
        )


def build_sam2_model(config_name, weights, input_size, random_init=False, seed=0):
    """
    Build SAM 2 from a config shipped in the sam2 package and load an official checkpoint.

    Args:
        config_name (str): e.g. "configs/sam2/sam2_hiera_l.yaml".
        weights (str): official checkpoint (a dict whose "model" entry is the state dict).
        input_size (int): square input side (1024 for the official models), multiple of 32.
        random_init (bool): allow an empty ``weights``.
        seed (int): seed of the random initialisation.
    Returns:
        sam2.modeling.sam2_base.SAM2Base in eval mode, on CPU.
    """
    check_sam2_version()
    from hydra.errors import MissingConfigException
    from sam2.build_sam import build_sam2

    overrides = ["++model.image_size={}".format(int(input_size))]
    try:
        with random_init_rng(seed):
            model = build_sam2(
                config_name, None, device="cpu", mode="eval", hydra_overrides_extra=overrides
            )
    except MissingConfigException as e:
        raise ValueError(
            "MODEL.REFSEG.SAM2.CONFIG={!r} is not a config of the sam2 package (for example "
            "configs/sam2/sam2_hiera_l.yaml or configs/sam2.1/sam2.1_hiera_l.yaml)".format(
                config_name
            )
        ) from e
    if weights:
        state = load_state_dict_file(weights, what="SAM 2", key="model")
        load_weights_strict(
            model, state, weights, "SAM 2 config " + config_name,
            "MODEL.REFSEG.SAM2.WEIGHTS / SAM2.CONFIG",
        )
        logger.info("Loaded SAM 2 weights from %s (config %s)", weights, config_name)
    elif random_init:
        logger.warning("SAM 2 (%s) is RANDOMLY INITIALISED (MODEL.REFSEG.RANDOM_INIT)", config_name)
    else:
        raise ValueError(
            "MODEL.REFSEG.SAM2.WEIGHTS is empty: set it to the official SAM 2 checkpoint of "
            "{} (see docs/INSTALL.md, 'Checkpoints'), or set MODEL.REFSEG.RANDOM_INIT True for a "
            "random-weight run".format(config_name)
        )
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


class SAM2Prompter(nn.Module):
    """Point-grid and box prompting of a frozen SAM 2 model."""

    def __init__(self, sam_model, points_per_side, points_per_batch, pred_iou_thresh,
                 decoder="official", amp_dtype=None, tf32=False, interface="direct"):
        """
        Args:
            sam_model (SAM2Base): see :func:`build_sam2_model`.
            points_per_side (int): the prompt grid is points_per_side ** 2 points.
            points_per_batch (int): prompts decoded together (the shared decoder holds the
                per-prompt image tokens of fewer at once on large inputs, see
                ``prompt_decoding``).
            pred_iou_thresh (float): keep proposals whose predicted IoU is strictly above.
            decoder (str): "official" or "shared" (see the module docstring).
            amp_dtype (torch.dtype or None): autocast dtype of :meth:`autocast` (the SAM 2
                forwards of targets and references; ACCEL.AMP).
            tf32 (bool): allow TF32 in CUDA matmuls inside :meth:`autocast` (ACCEL.TF32).
            interface (str): "direct" or "image_predictor" (see the module docstring).
        """
        super().__init__()
        if decoder not in DECODERS:
            raise ValueError("MODEL.REFSEG.SAM2.DECODER must be one of {}, got {!r}".format(
                DECODERS, decoder))
        if interface not in INTERFACES:
            raise ValueError("MODEL.REFSEG.SAM2.INTERFACE must be one of {}, got {!r}".format(
                INTERFACES, interface))
        self.decoder = decoder
        self.interface = interface
        self.amp_dtype = amp_dtype
        self.tf32 = tf32
        self.shared = SharedPromptDecoder(sam_model.sam_mask_decoder, points_per_batch)
        _set_decoder_precision(sam_model)
        self.sam = sam_model
        self.input_size = int(sam_model.image_size)
        self.points_per_side = points_per_side
        self.points_per_batch = points_per_batch
        self.pred_iou_thresh = pred_iou_thresh
        self.register_buffer("pixel_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), False)
        self.register_buffer("grid", point_grid(points_per_side, self.input_size), False)

    def autocast(self, dtype=None):
        """
        The precision context of the SAM 2 forwards (ACCEL.AMP, ACCEL.TF32; a no-op in fp32):
        ACCEL.AMP's mixed precision, or with ``dtype`` (MEMORY.SAM2_AMP for reference masks) a
        plain autocast to it.
        """
        return precision(self.pixel_mean.device.type, dtype or self.amp_dtype, self.tf32,
                         keep_sensitive=dtype is None)

    @property
    def upsample_antialias(self):
        """Whether mask logits are upsampled to the image with antialiasing (the interface's)."""
        return self.interface == "direct"

    def prepare_image(self, image):
        """
        The SAM 2 input of a mapped image.

        Args:
            image: (3, S, S) uint8 ("direct": squashed by the mapper) or (3, H, W) uint8
                ("image_predictor": resized here, bilinear with antialiasing, in float).
        Returns:
            (1, 3, S, S) float32 RGB in [0, 1] on the device.
        """
        x = image.to(self.pixel_mean.device).to(torch.float32)[None] / 255.0
        size = self.input_size
        if self.interface == "image_predictor":
            return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False,
                                 antialias=True)
        if x.dim() != 4 or tuple(x.shape[1:]) != (3, size, size):
            raise ValueError("SAM 2 input has shape {}, expected (3, {s}, {s}): images must come "
                             "from the refseg mappers".format(tuple(image.shape), s=size))
        return x

    def input_boxes(self, boxes, size):
        """
        XYXY boxes in the pixels of an image of ``size`` = (H, W) -> (R, 4) in the S x S input
        frame, computed as the interface does.
        """
        height, width = size
        side = self.input_size
        boxes = boxes.to(self.pixel_mean.device, torch.float32)
        if self.interface == "image_predictor":
            scale = torch.tensor([width, height] * 2, dtype=torch.float32, device=boxes.device)
            return boxes / scale * side
        return boxes * torch.tensor([side / width, side / height] * 2, device=boxes.device)

    def _shared_context(self, embedding, high_res):
        return run_sensitive(self._prepare_shared, embedding, high_res)

    def _prepare_shared(self, embedding, high_res):
        pe = self.sam.sam_prompt_encoder.get_dense_pe()
        _, dense = self.sam.sam_prompt_encoder(points=None, boxes=None, masks=None)
        return self.shared.prepare(embedding, pe, dense, high_res)

    def encode_image(self, image):
        """
        Args:
            image: (1, 3, S, S) RGB in [0, 1].
        Returns:
            embedding (1, 256, e, e) and the two high-resolution feature maps
            [(1, 32, 4e, 4e), (1, 64, 2e, 2e)] (after the decoder's conv_s0 / conv_s1).
        """
        x = (image - self.pixel_mean) / self.pixel_std
        with without_position_encodings(self.sam.image_encoder.neck):
            backbone_out = self.sam.forward_image(x)
        maps = backbone_out["backbone_fpn"][-self.sam.num_feature_levels :]
        if self.interface == "image_predictor" and self.sam.directly_add_no_mem_embed:
            maps[-1] = maps[-1] + self.sam.no_mem_embed.reshape(1, -1, 1, 1)
        return maps[-1], maps[:-1]

    def _decode(self, embedding, high_res, points=None, boxes=None, multimask=True):
        n = (points[0] if points is not None else boxes).shape[0]
        sparse, dense = self.sam.sam_prompt_encoder(points=points, boxes=boxes, masks=None)
        logits, ious, _, _ = self.sam.sam_mask_decoder(
            image_embeddings=embedding.expand(n, -1, -1, -1),
            image_pe=self.sam.sam_prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask,
            repeat_image=False,
            high_res_features=[f.expand(n, -1, -1, -1) for f in high_res],
        )
        return logits, ious

    def decode_point_grid(self, embedding, high_res):
        """
        Decode the point grid in batches; keep, per prompt, the best of the three multimask
        outputs, and only proposals whose predicted IoU exceeds the threshold.

        Args:
            embedding, high_res: from :meth:`encode_image`.
        Returns:
            logits (N, h, w) and predicted IoUs (N,), in prompt order, N <= P.
        """
        points = self.grid
        if self.decoder == "shared":
            labels = torch.ones((points.shape[0], 1), dtype=torch.int32, device=points.device)
            sparse, _ = self.sam.sam_prompt_encoder(points=(points[:, None, :], labels),
                                                    boxes=None, masks=None)
            ctx = self._shared_context(embedding, high_res)
            logits, ious, _, _ = self.shared.decode_multimask(ctx, sparse, self.pred_iou_thresh)
            return logits, ious
        all_logits, all_ious = [], []
        for start in range(0, points.shape[0], self.points_per_batch):
            coords = points[start : start + self.points_per_batch, None, :]
            labels = torch.ones(coords.shape[:2], dtype=torch.int32, device=coords.device)
            logits, ious = self._decode(embedding, high_res, points=(coords, labels))
            logits, ious = select_best_multimask(logits, ious.float())
            keep = ious > self.pred_iou_thresh
            all_logits.append(logits[keep])
            all_ious.append(ious[keep])
        return torch.cat(all_logits), torch.cat(all_ious)

    def decode_boxes(self, embedding, high_res, boxes):
        """
        Single-mask box prompting (SAM 2's usual box setting).

        Args:
            boxes: (R, 4) xyxy in the S x S input frame.
        Returns:
            (R, h, w) mask logits.
        """
        prompt = {"points": None, "boxes": boxes}
        if self.interface == "image_predictor":
            labels = torch.tensor([[2, 3]], dtype=torch.int32, device=boxes.device)
            prompt = {"points": (boxes.reshape(-1, 2, 2), labels.repeat(boxes.shape[0], 1)),
                      "boxes": None}
        if self.decoder == "shared":
            sparse, _ = self.sam.sam_prompt_encoder(masks=None, **prompt)
            return self.shared.decode_single(self._shared_context(embedding, high_res), sparse)[0]
        logits, _ = self._decode(embedding, high_res, multimask=False, **prompt)
        return logits[:, 0]


class _UnusedPositionEncoding(nn.Module):
    """Stands in for the FPN neck's position encoding: an empty tensor per pyramid level."""

    def forward(self, x):
        return x.new_empty(0)


_UNUSED_POSITION_ENCODING = _UnusedPositionEncoding()


@contextlib.contextmanager
def without_position_encodings(neck):
    """
    Run SAM 2's FPN neck (``sam2.modeling.backbones.image_encoder.FpnNeck``) without its sine
    position encodings: each pyramid level's (B, 256, H, W) encoding is repeated from a cache
    on every image (~90 ms at a 1024 input on a 2-core CPU) and only the memory attention of
    video tracking reads it. The features are unchanged; ``vision_pos_enc`` holds empty tensors.
    """
    encoding = neck.position_encoding
    neck.position_encoding = _UNUSED_POSITION_ENCODING
    try:
        yield
    finally:
        neck.position_encoding = encoding


def _set_decoder_precision(sam_model):
    """
    Make the mask decoder's IoU head run in fp32 with autocast off under any autocast (it ranks
    and thresholds the proposals), and the prompt encoder (with its dense positional encoding)
    and the decoder's two-way transformer through :func:`..precision.run_sensitive` (fp32
    under ACCEL.AMP's mixed precision). Identity in fp32; idempotent.
    """
    decoder = sam_model.sam_mask_decoder
    head = decoder.iou_prediction_head
    if getattr(head, "_refseg_fp32", False):
        return
    forward = head.forward

    def fp32_forward(x):
        with torch.autocast(x.device.type, enabled=False):
            return forward(x.float())

    head.forward = fp32_forward
    head._refseg_fp32 = True
    encoder = sam_model.sam_prompt_encoder
    encoder.get_dense_pe = functools.partial(run_sensitive, encoder.get_dense_pe)
    for module in (encoder, decoder.transformer):
        module.forward = functools.partial(run_sensitive, module.forward)
