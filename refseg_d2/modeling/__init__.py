"""
The RefSeg model, stage by stage: ``proposals/`` (SAM 2 + pooled DINOv2 features of a target),
``memory/`` (references -> :class:`MemoryBank`), ``matching.py`` (proposals x prototypes ->
Instances), composed by :class:`RefSeg` in ``meta_arch.py``; ``ops.py`` holds the formulas.
"""
from .encoders import REFSEG_ENCODER_REGISTRY, build_encoder
from .matching import ProposalMatcher
from .memory import MemoryBank, RefSegCheckpointer, ReferenceRecord, load_memory, save_memory
from .meta_arch import RefSeg
from .proposals import ProposalGenerator, Proposals, SAM2Prompter, build_sam2_model
