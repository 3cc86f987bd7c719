"""refseg_d2: training-free reference-based instance segmentation for Detectron2."""
from . import evaluation as _evaluation  # noqa: F401  registers the benchmark evaluators
from .checkpoint import RefSegCheckpointer
from .config import add_refseg_config
from .data import RefSegReferenceMapper, RefSegTargetMapper
from .data import datasets as _datasets  # noqa: F401  registers the benchmark datasets
from .engine import MemoryBankHook, RefSegTrainer, ensure_memory, fill_memory
from .modeling import REFSEG_ENCODER_REGISTRY, MemoryBank, RefSeg  # RefSeg: registration

__version__ = "0.1.0"
