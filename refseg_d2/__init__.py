"""refseg_d2: training-free reference-based instance segmentation for Detectron2."""
from .checkpoint import RefSegCheckpointer
from .config import add_refseg_config
from .data import RefSegReferenceMapper, RefSegTargetMapper
from .engine import MemoryBankHook, RefSegTrainer, ensure_memory, fill_memory
from .modeling import REFSEG_ENCODER_REGISTRY, MemoryBank, RefSeg  # RefSeg: registration

__version__ = "0.1.0"
