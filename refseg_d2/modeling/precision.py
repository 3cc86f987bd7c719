"""
Numerical precision of the foundation-model forwards (``MODEL.REFSEG.ACCEL.AMP`` / ``ACCEL.TF32``):
a context that each model (DINOv2 encoder, SAM 2 prompter) enters around its own forwards, so
that building a model changes no process-wide state.

``ACCEL.AMP`` is mixed precision: inside its context (``precision(..., keep_sensitive=True)``)
the steps wrapped in :func:`run_sensitive` run in fp32. Those are the steps of SAM 2's prompt
decoding that decide which proposals exist (measured against fp32 on CPU, bf16, point grid):
the image-side projections of the decoder and its two-way transformer, whose outputs give the
predicted IoUs (the threshold and the best-of-3 choice) and the mask tokens. In bf16 they moved
predicted IoUs by up to 0.014 and flipped 3 threshold decisions in 716; DINOv2 in bf16 changed
no prediction; the SAM 2 image encoder and the mask upscaling in bf16 move mask borders only
(mask IoU >= 0.96 with fp32). A plain autocast (``keep_sensitive=False``: FSOD-VFM's bf16
reference masks, ``MEMORY.SAM2_AMP``) runs everything in the autocast dtype, as their code does.
"""
import contextlib
import contextvars

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


# The device type of the mixed-precision context being run, or None outside one.
_MIXED_DEVICE = contextvars.ContextVar("refseg_mixed_precision_device", default=None)


@contextlib.contextmanager
def precision(device_type, dtype=None, tf32=False, keep_sensitive=False):
    """
    Autocast to ``dtype`` (None: fp32, no autocast) and, with ``tf32`` on CUDA, TF32 in matmuls
    and cuDNN convolutions; PyTorch's TF32 flags are restored on exit. With ``keep_sensitive``
    the steps run through :func:`run_sensitive` inside stay in fp32 (mixed precision).
    """
    mixed = device_type if keep_sensitive and dtype is not None else None
    token = _MIXED_DEVICE.set(mixed)
    try:
        with contextlib.ExitStack() as stack:
            stack.enter_context(torch.autocast(device_type, dtype=dtype, enabled=dtype is not None))
            if tf32 and device_type == "cuda":
                stack.enter_context(_tf32())
            yield
    finally:
        _MIXED_DEVICE.reset(token)


def run_sensitive(fn, *args, **kwargs):
    """
    ``fn(*args, **kwargs)``; inside a mixed-precision :func:`precision` context, with autocast
    off and the floating-point tensors of the arguments (also inside lists, tuples and dicts)
    cast to fp32.
    """
    device_type = _MIXED_DEVICE.get()
    if device_type is None:
        return fn(*args, **kwargs)
    with torch.autocast(device_type, enabled=False):
        return fn(*to_fp32(args), **to_fp32(kwargs))


def to_fp32(value):
    """``value`` with its floating-point tensors (also inside lists, tuples and dicts) in fp32."""
    if isinstance(value, torch.Tensor):
        return value.float() if value.is_floating_point() else value
    if isinstance(value, dict):
        return {k: to_fp32(v) for k, v in value.items()}
    if isinstance(value, list):
        return [to_fp32(v) for v in value]
    if isinstance(value, tuple):
        items = [to_fp32(v) for v in value]
        return type(value)(*items) if hasattr(value, "_fields") else tuple(items)
    return value


@contextlib.contextmanager
def _tf32():
    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    before = (matmul.allow_tf32, cudnn.allow_tf32)
    matmul.allow_tf32 = cudnn.allow_tf32 = True
    try:
        yield
    finally:
        matmul.allow_tf32, cudnn.allow_tf32 = before
