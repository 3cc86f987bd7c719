"""
Numerical precision of the foundation-model forwards (``MODEL.REFSEG.ACCEL.AMP`` / ``ACCEL.TF32``):
a context that each model (DINOv2 encoder, SAM 2 prompter) enters around its own forwards, so
that building a model changes no process-wide state.
"""
import contextlib

import torch

from ..config import declare_choices

AMP_DTYPES = {"": None, "bf16": torch.bfloat16, "fp16": torch.float16}
declare_choices("ACCEL.AMP", AMP_DTYPES)
declare_choices("MEMORY.SAM2_AMP", AMP_DTYPES)


def amp_dtype(amp, key="ACCEL.AMP"):
    """``ACCEL.AMP`` (or ``key``) name ("", "bf16", "fp16") -> torch dtype or None (fp32)."""
    if amp not in AMP_DTYPES:
        raise ValueError("MODEL.REFSEG.{} must be one of {}, got {!r}".format(
            key, tuple(AMP_DTYPES), amp))
    return AMP_DTYPES[amp]


@contextlib.contextmanager
def precision(device_type, dtype=None, tf32=False):
    """
    Autocast to ``dtype`` (None: fp32, no autocast) and, with ``tf32`` on CUDA, TF32 in matmuls
    and cuDNN convolutions; PyTorch's TF32 flags are restored on exit.
    """
    with contextlib.ExitStack() as stack:
        stack.enter_context(torch.autocast(device_type, dtype=dtype, enabled=dtype is not None))
        if tf32 and device_type == "cuda":
            stack.enter_context(_tf32())
        yield


@contextlib.contextmanager
def _tf32():
    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    before = (matmul.allow_tf32, cudnn.allow_tf32)
    matmul.allow_tf32 = cudnn.allow_tf32 = True
    try:
        yield
    finally:
        matmul.allow_tf32, cudnn.allow_tf32 = before
