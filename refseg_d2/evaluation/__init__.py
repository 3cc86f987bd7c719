"""
Evaluators of the benchmark protocols, registered on import as evaluator types of
``RefSegTrainer.build_evaluator`` (dataset metadata ``evaluator_type``):

- ``fewshot_coco``: COCO AP (bbox, and segm when the ground truth has masks) on a ground-truth
  file derived at first use (restricted to the evaluated classes);
- ``voc07``: Detectron2's PascalVOCDetectionEvaluator, VOC07 11-point AP (``voc07_bbox``);
- ``semseg_from_instances``: mIoU of the instance predictions merged into semantic maps
  (``sem_seg``).
"""
from detectron2.data import MetadataCatalog

from ..engine.trainer import EVALUATOR_FACTORIES
from .ground_truth import prepare_ground_truth, register_ground_truth
from .semantic import InstancesToSemanticEvaluator, instances_to_semantic, semantic_scores
from .voc import VOCFewShotEvaluator


def _fewshot_coco(cfg, dataset_name, output_folder):
    prepare_ground_truth(dataset_name)
    return EVALUATOR_FACTORIES["coco"](cfg, dataset_name, output_folder)


def _voc07(cfg, dataset_name, output_folder):
    return VOCFewShotEvaluator(dataset_name)


def _semseg_from_instances(cfg, dataset_name, output_folder):
    thresh = MetadataCatalog.get(dataset_name).get("semseg_score_thresh", 0.5)
    return InstancesToSemanticEvaluator(dataset_name, score_thresh=thresh)


EVALUATOR_FACTORIES["fewshot_coco"] = _fewshot_coco
EVALUATOR_FACTORIES["voc07"] = _voc07
EVALUATOR_FACTORIES["semseg_from_instances"] = _semseg_from_instances

__all__ = [
    "InstancesToSemanticEvaluator", "VOCFewShotEvaluator", "instances_to_semantic",
    "prepare_ground_truth", "register_ground_truth", "semantic_scores",
]
