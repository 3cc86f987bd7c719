"""
The evaluators of a test dataset, chosen by its metadata ``evaluator_type`` (a name or a list of
names; default "coco"):

- ``coco``: COCO AP, bbox and segm (:class:`RefSegCOCOEvaluator`, pycocotools, top-100);
- ``fewshot_coco``: the same on a ground-truth file derived at first use (restricted to the
  evaluated classes, ``refseg_d2.data.ground_truth``);
- ``pascal_voc``: Detectron2's PascalVOCDetectionEvaluator;
- ``voc07``: VOC07 11-point AP of a VOC test set registered in COCO format (``voc07_bbox``);
- ``semseg_from_instances``: mIoU of the instance predictions merged into semantic maps;
- ``gfsod_coco``: ``fewshot_coco`` plus bAP / nAP over the base / novel classes of the metadata
  (:class:`GFSODCOCOEvaluator`, generalized few-shot COCO);
- ``lvis``: Detectron2's LVISEvaluator (federated LVIS AP with APr / APc / APf; needs the
  ``lvis`` package; :class:`RefSegLVISEvaluator` makes the PyPI release run under NumPy 2),
  the datasets Detectron2 registers as LVIS (``lvis_v1_val``).

Every COCO / LVIS evaluator gets ``MODEL.REFSEG.MAX_DETECTIONS`` (the model's top-k) as its
maximum detections per image (the authors' 100 on every benchmark, LVIS included; LVIS's own
protocol is 300).

More types can be added with :func:`register_evaluator_type`.
"""
from detectron2.data import MetadataCatalog
from detectron2.evaluation import DatasetEvaluators, PascalVOCDetectionEvaluator

from ..data.ground_truth import prepare_ground_truth
from .coco import RefSegCOCOEvaluator
from .gfsod import GFSODCOCOEvaluator
from .lvis import RefSegLVISEvaluator
from .semantic import InstancesToSemanticEvaluator
from .voc import VOCFewShotEvaluator

# evaluator_type -> factory(cfg, dataset_name, output_folder) -> DatasetEvaluator
EVALUATOR_FACTORIES = {}


def register_evaluator_type(name):
    """Decorator: register ``factory(cfg, dataset_name, output_folder)`` as ``name``."""

    def register(factory):
        if name in EVALUATOR_FACTORIES:
            raise ValueError("Evaluator type {!r} is already registered".format(name))
        EVALUATOR_FACTORIES[name] = factory
        return factory

    return register


def _coco_evaluator(evaluator_class, cfg, dataset_name, output_folder):
    return evaluator_class(
        dataset_name,
        output_dir=output_folder,
        coco_impl=cfg.MODEL.REFSEG.EVAL.COCO_IMPL,
        max_dets_per_image=cfg.MODEL.REFSEG.MAX_DETECTIONS,
    )


@register_evaluator_type("coco")
def _coco(cfg, dataset_name, output_folder):
    return _coco_evaluator(RefSegCOCOEvaluator, cfg, dataset_name, output_folder)


@register_evaluator_type("fewshot_coco")
def _fewshot_coco(cfg, dataset_name, output_folder):
    prepare_ground_truth(dataset_name)
    return _coco(cfg, dataset_name, output_folder)


@register_evaluator_type("pascal_voc")
def _pascal_voc(cfg, dataset_name, output_folder):
    return PascalVOCDetectionEvaluator(dataset_name)


@register_evaluator_type("voc07")
def _voc07(cfg, dataset_name, output_folder):
    return VOCFewShotEvaluator(dataset_name)


@register_evaluator_type("semseg_from_instances")
def _semseg_from_instances(cfg, dataset_name, output_folder):
    thresh = MetadataCatalog.get(dataset_name).get("semseg_score_thresh", 0.5)
    return InstancesToSemanticEvaluator(dataset_name, score_thresh=thresh)


def build_evaluator(cfg, dataset_name, output_folder):
    """
    The evaluator(s) of ``dataset_name`` (one, or DatasetEvaluators for several types).
    """
    types = MetadataCatalog.get(dataset_name).get("evaluator_type", "coco")
    types = list(types) if isinstance(types, (list, tuple)) else [types]
    unknown = [t for t in types if t not in EVALUATOR_FACTORIES]
    if unknown:
        raise ValueError(
            "No evaluator for evaluator_type {} of {}; known: {}".format(
                unknown, dataset_name, sorted(EVALUATOR_FACTORIES)
            )
        )
    evaluators = [EVALUATOR_FACTORIES[t](cfg, dataset_name, output_folder) for t in types]
    return evaluators[0] if len(evaluators) == 1 else DatasetEvaluators(evaluators)


@register_evaluator_type("gfsod_coco")
def _gfsod_coco(cfg, dataset_name, output_folder):
    prepare_ground_truth(dataset_name)
    return _coco_evaluator(GFSODCOCOEvaluator, cfg, dataset_name, output_folder)


@register_evaluator_type("lvis")
def _lvis(cfg, dataset_name, output_folder):
    return RefSegLVISEvaluator(
        dataset_name,
        tasks=("bbox", "segm"),
        output_dir=output_folder,
        max_dets_per_image=cfg.MODEL.REFSEG.MAX_DETECTIONS,
    )
