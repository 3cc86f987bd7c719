"""
``MODEL.REFSEG.ACCEL.KEEP_FREED_MEMORY``: glibc's malloc maps each block above its mmap
threshold (128 KiB, raised as such blocks are freed, to 32 MiB at most) on its own and unmaps it
when it is freed, and trims freed memory from the top of its heap; the next large tensor is then
mapped afresh and every one of its 4 KiB pages is faulted in and zeroed on first touch. The
foundation-model forwards allocate and free tensors of 1-150 MB thousands of times per image
(the prompt decoder's chunks, the encoders' activations). Keeping freed memory in the process
during them made a target image 3-17% faster on 2 CPU cores (tools/benchmark.py, SAM 2 Hiera-T
and DINOv2 ViT-S/14 at 1024 / 518 px, 16 x 16 points), for ~150 MB more peak RSS. After them the
thresholds go back to glibc's own ceilings, so that the full-size masks of matching (chunks of
up to 256 MB at 6000 x 4000) are mapped and returned as without the setting: kept in the heap
too, they fragmented it and raised the peak RSS of a 6000 x 4000 target from 7.6 to 11.6 GB.
"""
import contextlib
import ctypes
import functools
import sys

# mallopt parameters of glibc's <malloc.h>.
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3

# Within the forwards: blocks below this size come from the heap, and up to this much freed
# memory at its top is kept.
KEEP_BYTES = 1 << 28

# After them: the most glibc's adaptive thresholds reach on 64-bit systems (mmap 32 MiB, trim
# twice that).
GLIBC_MMAP_CEILING = 32 << 20
GLIBC_TRIM_CEILING = 64 << 20


@functools.lru_cache(maxsize=None)
def _mallopt():
    """glibc's ``mallopt`` (int, int) -> int, or None where the C library is not glibc (looked
    up once: it is called twice per ``compute_proposals``)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return None
    if not (hasattr(libc, "gnu_get_libc_version") and hasattr(libc, "mallopt")):
        return None
    mallopt = libc.mallopt
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return mallopt


def set_thresholds(mmap_bytes, trim_bytes):
    """
    Set glibc's mmap and trim thresholds for the whole process. Nothing numerical changes.

    Returns:
        bool: True if glibc took both; False where the C library is not glibc (another OS,
        musl), which is left as it is.
    """
    mallopt = _mallopt()
    if mallopt is None:
        return False
    return (mallopt(M_MMAP_THRESHOLD, int(mmap_bytes)) == 1
            and mallopt(M_TRIM_THRESHOLD, int(trim_bytes)) == 1)


@contextlib.contextmanager
def freed_memory_kept(enabled=True):
    """
    Within the block (if ``enabled``): blocks below :data:`KEEP_BYTES` are served from the heap
    and freed memory up to that size stays in it; after it, the thresholds are glibc's
    ceilings (:data:`GLIBC_MMAP_CEILING`, :data:`GLIBC_TRIM_CEILING`).
    """
    if not (enabled and set_thresholds(KEEP_BYTES, KEEP_BYTES)):
        yield
        return
    try:
        yield
    finally:
        set_thresholds(GLIBC_MMAP_CEILING, GLIBC_TRIM_CEILING)
