"""
``MODEL.REFSEG.ACCEL.COMPILE``: torch.compile of the foundation-model code that actually runs
(the reference runs it uncompiled). Autocast and TF32 are in ``refseg_d2.modeling.precision``.
"""
import logging

import torch

from ...config import declare_choices

logger = logging.getLogger(__name__)

# "" compiles nothing; "eager" and "aot_eager" trace without code generation (debugging).
COMPILE_BACKENDS = declare_choices("ACCEL.COMPILE", ("", "inductor", "eager", "aot_eager"))


def compile_models(encoder, prompter, backend="inductor"):
    """
    ``ACCEL.COMPILE <backend>``: torch.compile, at fixed shapes (``dynamic=False``),
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
    prompter.sam.image_encoder.compile(**kwargs)
    if prompter.decoder == "shared":
        prompter.shared.compile(**kwargs)
    else:
        prompter.sam.sam_mask_decoder.compile(**kwargs)
    logger.info("torch.compile (backend %s): DINOv2 forward_features, SAM 2 image encoder, %s "
                "prompt decoder", backend, prompter.decoder)

