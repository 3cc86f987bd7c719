"""
The gallery of a run report: the target images with the best and the worst per-image recall at
IoU 0.5, each drawn as ground truth | predictions with Detectron2's Visualizer.

Predictions are read back from the COCO results file the run's evaluator wrote
(``OUTPUT_DIR/inference/<dataset>/coco_instances_results.json``); the ground truth is the test
dataset's, from ``DatasetCatalog``.
"""
import json
import logging
import os
from collections import defaultdict

from detectron2.data import DatasetCatalog, MetadataCatalog
from PIL import Image

from ..utils.images import read_rgb
from ..utils.visualization import (
    coco_results_to_instances,
    draw_ground_truth,
    draw_predictions,
    side_by_side,
)
from .recall import best_and_worst, ground_truth_records, image_recall

logger = logging.getLogger(__name__)


def results_file(output_dir, dataset_name):
    """Where the run's COCOEvaluator wrote the predictions of ``dataset_name``."""
    return os.path.join(output_dir, "inference", dataset_name, "coco_instances_results.json")


def load_predictions(path, score_thresh=0.0):
    """{image_id: [COCO result dicts]} of a results file, those with score >= ``score_thresh``."""
    with open(path) as f:
        results = json.load(f)
    per_image = defaultdict(list)
    for r in results:
        if r["score"] >= score_thresh:
            per_image[r["image_id"]].append(r)
    return per_image


def id_maps(metadata):
    """(dataset id -> contiguous index, contiguous index -> dataset id) of a dataset."""
    to_contiguous = metadata.get("thing_dataset_id_to_contiguous_id", None)
    if to_contiguous is None:
        to_contiguous = {c: c for c in range(len(metadata.thing_classes))}
    to_contiguous = {int(k): int(v) for k, v in to_contiguous.items()}
    return to_contiguous, {v: k for k, v in to_contiguous.items()}


def score_images(dataset_name, per_image, iou_thresh=0.5, score_thresh=0.5):
    """
    Per-image recall of every image of ``dataset_name``.

    Returns:
        list of (dataset dict, recall result of :func:`image_recall`), dataset order.
    """
    _, to_id = id_maps(MetadataCatalog.get(dataset_name))
    scored = []
    for d in DatasetCatalog.get(dataset_name):
        gt = ground_truth_records(d, to_id)
        result = image_recall(per_image.get(d["image_id"], []), gt, d["height"], d["width"],
                              iou_thresh, score_thresh)
        scored.append((d, result))
    return scored


def _shrink(image, max_width):
    if image.width <= max_width:
        return image
    height = max(1, round(image.height * max_width / image.width))
    return image.resize((max_width, height), Image.BILINEAR)


def draw_pair(dataset_name, dataset_dict, predictions, score_thresh=0.5, min_width=400,
              max_width=1200):
    """
    ground truth | predictions (score >= ``score_thresh``) of one image, a PIL image: images
    narrower than ``min_width`` are drawn enlarged to it, pairs wider than ``max_width`` shrunk.
    """
    meta = MetadataCatalog.get(dataset_name)
    to_contiguous, _ = id_maps(meta)
    image = read_rgb(dataset_dict["file_name"])
    h, w = dataset_dict["height"], dataset_dict["width"]
    if (image.height, image.width) != (h, w):
        image = image.resize((w, h), Image.BILINEAR)
    instances = coco_results_to_instances(predictions, h, w, to_contiguous)
    scale = max(1.0, min_width / float(w))
    canvas = side_by_side([draw_ground_truth(image, dataset_dict, meta, scale),
                           draw_predictions(image, instances, meta, score_thresh, scale)])
    return _shrink(canvas, max_width)


def gallery(dataset_name, output_dir, count=3, iou_thresh=0.5, score_thresh=0.5):
    """
    The gallery picks of a test dataset, drawn.

    Returns:
        dict with "best" and "worst": lists of {"file_name", "image_id", "recall", "matched",
        "total", "image" (PIL)}; "scored" (images with ground truth) and "mean_recall".
    """
    per_image = load_predictions(results_file(output_dir, dataset_name), score_thresh)
    scored = score_images(dataset_name, per_image, iou_thresh, score_thresh)
    best, worst = best_and_worst([r["recall"] for _, r in scored], count)
    recalls = [r["recall"] for _, r in scored if r["recall"] is not None]

    def entry(i):
        d, r = scored[i]
        return {"file_name": d["file_name"], "image_id": d["image_id"], "recall": r["recall"],
                "matched": r["matched"], "total": r["total"],
                "image": draw_pair(dataset_name, d, per_image.get(d["image_id"], []),
                                   score_thresh)}

    return {
        "best": [entry(i) for i in best],
        "worst": [entry(i) for i in worst],
        "scored": len(recalls),
        "mean_recall": sum(recalls) / len(recalls) if recalls else None,
    }
