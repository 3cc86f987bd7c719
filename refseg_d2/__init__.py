"""refseg_d2: training-free reference-based instance segmentation for Detectron2."""
from .config import add_refseg_config
from .data import RefSegReferenceMapper, RefSegTargetMapper
from .data import datasets as _datasets  # noqa: F401  registers the benchmark datasets
from .engine import MemoryBankHook, RefSegTrainer, build_memory, ensure_memory, fill_memory
from .modeling import (  # RefSeg: registration of the meta-architecture
    REFSEG_ENCODER_REGISTRY,
    MemoryBank,
    RefSeg,
    RefSegCheckpointer,
    load_memory,
    save_memory,
)

__version__ = "0.1.0"
