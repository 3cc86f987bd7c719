"""
Helpers for tests, demos and offline smoke runs (as ``detectron2.utils.testing``): random-weight
checkpoints of the real SAM 2 and DINOv2 architectures in the official formats, and a small
synthetic COCO-format dataset. Nothing in the model imports them.
"""
from .random_weights import make_sam2_prompt_sensitive, write_random_checkpoints
from .synthetic import make_demo_dataset, make_split

__all__ = ["make_demo_dataset", "make_sam2_prompt_sensitive", "make_split", "write_random_checkpoints"]
