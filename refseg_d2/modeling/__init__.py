from .encoders import REFSEG_ENCODER_REGISTRY, build_encoder
from .memory import MemoryBank
from .meta_arch import RefSeg
