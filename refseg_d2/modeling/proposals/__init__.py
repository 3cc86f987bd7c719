"""
The proposal stage: class-agnostic SAM 2 masks from a point grid and their pooled DINOv2
features, computed once per target image and independent of the references.

- ``sam2_prompter.py``: building SAM 2 from its official files, :class:`SAM2Prompter`
  (image encoding, point-grid and box decoding).
- ``proposals.py``: :class:`Proposals` and :class:`ProposalGenerator` (image -> proposals).
"""
from .proposals import LogitMasks, ProposalGenerator, Proposals
from .sam2_prompter import SAM2_VERSION, SAM2Prompter, build_sam2_model, check_sam2_version

__all__ = [
    "LogitMasks", "ProposalGenerator", "Proposals", "SAM2Prompter",
    "SAM2_VERSION", "build_sam2_model", "check_sam2_version",
]
