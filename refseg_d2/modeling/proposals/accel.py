"""
Accelerator switches of ``MODEL.REFSEG.ACCEL`` that act on the foundation models: TF32 and
torch.compile of the code that actually runs (the authors' code runs fp32 throughout, without
autocast).
"""
import logging

import torch

logger = logging.getLogger(__name__)


def set_tf32(enabled):
    """
    ``ACCEL.TF32 True``: allow TF32 in CUDA matmuls and cuDNN convolutions (process-wide).
    False leaves PyTorch's defaults untouched (fp32 matmuls; cuDNN convolutions as PyTorch
    sets them, as in the reference's environment).
    """
    if enabled:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        logger.info("TF32 enabled for CUDA matmuls and convolutions (MODEL.REFSEG.ACCEL.TF32)")


def compile_models(encoder, prompter, backend="inductor"):
    """
    ``ACCEL.COMPILE True``: torch.compile, at fixed shapes (``dynamic=False``),
    - the encoder backbone's ``forward_features`` (what ``DinoV2Encoder.forward`` calls),
    - SAM 2's image encoder (called by ``forward_image``),
    - the prompt decoder: the shared decoder's per-chunk transformer and upscaling stages
      (chunks padded to fixed sizes), or SAM 2's ``MaskDecoder`` for "official" (one graph per
      batch size: the full batch and the grid's remainder, the same for every image).
    Target images all have one shape, so nothing recompiles from image to image; reference
    crops are encoded in batches of at most ``MODEL.REFSEG.MEMORY.CROPS_PER_BATCH``, and each
    new batch size compiles once more (at most that many graphs).
    """
    kwargs = {"backend": backend, "dynamic": False}
    backbone = getattr(encoder, "backbone", None)
    if backbone is None or not hasattr(backbone, "forward_features"):
        raise ValueError("MODEL.REFSEG.ACCEL.COMPILE: encoder {} has no backbone.forward_features "
                         "to compile".format(type(encoder).__name__))
    backbone.forward_features = torch.compile(backbone.forward_features, **kwargs)
    _fill_position_encoding_cache(prompter.sam.image_encoder, prompter.input_size)
    prompter.sam.image_encoder.compile(**kwargs)
    if prompter.decoder == "shared":
        prompter.shared.compile(**kwargs)
    else:
        prompter.sam.sam_mask_decoder.compile(**kwargs)
    logger.info("torch.compile (backend %s): DINOv2 forward_features, SAM 2 image encoder, %s "
                "prompt decoder", backend, prompter.decoder)


def _fill_position_encoding_cache(image_encoder, input_size):
    """
    SAM 2's FPN neck caches its sine position encodings in a dict on first use, which changes
    what the compiled graph guards on and recompiles it on the second image; fill the cache
    for the four pyramid levels (strides 4 to 32) before compiling.
    """
    pe = image_encoder.neck.position_encoding
    for stride in (4, 8, 16, 32):
        side = input_size // stride
        pe(torch.zeros(1, 1, side, side))
