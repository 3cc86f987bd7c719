"""
``MODEL.REFSEG.ACCEL.KEEP_FREED_MEMORY``: glibc's malloc maps each block above its mmap
threshold (128 KiB, raised as such blocks are freed, to 32 MiB at most) on its own and unmaps it
when it is freed, and trims freed memory from the top of its heap; the next large tensor is then
mapped afresh and every one of its 4 KiB pages is faulted in and zeroed on first touch. The pipeline allocates and frees tensors of 1-100 MB thousands of
times per image (the prompt decoder's chunks, the encoders' activations); keeping freed memory
in the process for reuse made a target image 10-17% faster on 2 CPU cores (tools/benchmark.py,
SAM 2 Hiera-T and DINOv2 ViT-S/14 at 1024 / 518 px, 16 x 16 points), for ~130 MB more peak RSS.
"""
import ctypes
import logging
import sys

logger = logging.getLogger(__name__)

# mallopt parameters of glibc's <malloc.h>.
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3

# Blocks below this size come from the heap and freed memory up to this size stays there.
KEEP_BYTES = 1 << 30


def keep_freed_memory(limit=KEEP_BYTES):
    """
    Set glibc's mmap and trim thresholds to ``limit`` bytes for the whole process: blocks of
    less than ``limit`` are served from the heap, and up to ``limit`` bytes of freed memory at
    its top are kept rather than returned to the operating system. Nothing numerical changes.

    Returns:
        bool: True if glibc took both settings; False where the C library is not glibc
        (another OS, musl), which is left as it is.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    if not (hasattr(libc, "gnu_get_libc_version") and hasattr(libc, "mallopt")):
        return False
    mallopt = libc.mallopt
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    done = mallopt(M_MMAP_THRESHOLD, int(limit)) == 1 and mallopt(M_TRIM_THRESHOLD, int(limit)) == 1
    if done:
        logger.info("CPU allocator: freed memory up to %d MiB is kept for reuse "
                    "(MODEL.REFSEG.ACCEL.KEEP_FREED_MEMORY)", limit >> 20)
    return done
