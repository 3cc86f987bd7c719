"""
Evaluation of refseg_d2 runs: Detectron2's evaluators chosen by the test dataset's
``evaluator_type`` (``build.py``), plus the protocols it does not have: VOC07 11-point AP of
VOC registered in COCO format (``voc.py``), semantic mIoU of instance predictions
(``semantic.py``), generalized few-shot COCO bAP / nAP (``gfsod.py``) and LVIS AP under
NumPy 2 (``lvis.py``).
"""
from .build import EVALUATOR_FACTORIES, build_evaluator, register_evaluator_type
from .coco import RefSegCOCOEvaluator
from .gfsod import GFSODCOCOEvaluator, evaluate_on_categories
from .lvis import RefSegLVISEvaluator
from .semantic import InstancesToSemanticEvaluator, instances_to_semantic, semantic_scores
from .voc import VOCFewShotEvaluator

__all__ = [
    "EVALUATOR_FACTORIES", "GFSODCOCOEvaluator", "InstancesToSemanticEvaluator",
    "RefSegCOCOEvaluator", "RefSegLVISEvaluator", "VOCFewShotEvaluator", "build_evaluator", "evaluate_on_categories",
    "instances_to_semantic", "register_evaluator_type", "semantic_scores",
]
