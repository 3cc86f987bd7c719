#!/usr/bin/env python
r"""
Predictions of a COCO-format results file next to the ground truth of its dataset, one image
per dataset image: ground truth | predictions (score >= --score-thresh).

    python tools/visualize_results.py \
        --results output/my_run/inference/my_test/coco_instances_results.json \
        --gt test.json test_images/ --output output/my_run/vis
    python tools/visualize_results.py --results ... --dataset coco_2017_val --output ...

The results file is what tools/train_net.py (COCOEvaluator) or tools/demo.py writes: a list of
{"image_id", "category_id", "bbox" (XYWH), "score", "segmentation" (RLE, optional)}.
"""
import argparse
import logging
import os
from collections import defaultdict

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.utils.logger import setup_logger
from tqdm import tqdm

from refseg_d2.data.reference_sources import register_reference_source
from refseg_d2.utils.files import read_json
from refseg_d2.utils.images import read_rgb
from refseg_d2.utils.visualization import (
    coco_results_to_instances,
    draw_ground_truth,
    draw_predictions,
    output_path,
    side_by_side,
)

logger = logging.getLogger("refseg_d2.visualize_results")


def get_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--results", required=True, help="COCO-format results file (JSON list)")
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--gt", nargs=2, metavar=("JSON", "IMAGE_ROOT"),
                       help="the ground truth: a COCO-format file and its image folder")
    group.add_argument("--dataset", help="the ground truth: a registered dataset name")
    p.add_argument("--output", required=True, help="output folder")
    p.add_argument("--score-thresh", type=float, default=0.5, help="minimum score drawn")
    p.add_argument("--max-images", type=int, default=0, help="at most this many images (0: all)")
    return p


def load_results(path):
    """The results grouped by image id."""
    results = read_json(path, "Results file")
    if not isinstance(results, list):
        raise ValueError("Results file {} must hold a list of detections".format(path))
    per_image = defaultdict(list)
    for i, r in enumerate(results):
        missing = [k for k in ("image_id", "category_id", "bbox", "score") if k not in r]
        if missing:
            raise ValueError("Detection {} of {} has no {}".format(i, path, missing))
        per_image[r["image_id"]].append(r)
    return per_image


def visualize(dataset_name, per_image, out_dir, score_thresh, max_images=0):
    """
    Write ground truth | predictions for every image of ``dataset_name``.

    Returns:
        list[str]: the written files, in dataset order.
    """
    dicts = DatasetCatalog.get(dataset_name)
    meta = MetadataCatalog.get(dataset_name)
    id_map = meta.get("thing_dataset_id_to_contiguous_id", None)
    if id_map is None:
        id_map = {c: c for c in range(len(meta.thing_classes))}
    unknown = set(per_image) - {d["image_id"] for d in dicts}
    if unknown:
        logger.warning("%d image ids of the results are not in %s (e.g. %s): not drawn",
                       len(unknown), dataset_name, sorted(unknown)[:5])
    os.makedirs(out_dir, exist_ok=True)
    written, used = [], set()
    dicts = dicts[:max_images] if max_images > 0 else dicts
    for d in tqdm(dicts, desc="visualize", unit="img"):
        image = read_rgb(d["file_name"])
        height, width = d.get("height", image.height), d.get("width", image.width)
        preds = coco_results_to_instances(per_image.get(d["image_id"], []), height, width, id_map)
        canvas = side_by_side([draw_ground_truth(image, d, meta),
                               draw_predictions(image, preds, meta, score_thresh)])
        path = output_path(out_dir, d["file_name"], used)
        canvas.save(path)
        written.append(path)
    return written


def main(argv=None):
    args = get_parser().parse_args(argv)
    os.makedirs(args.output, exist_ok=True)
    setup_logger(output=args.output, name="refseg_d2")
    name = args.dataset
    if args.gt:
        name = register_reference_source("refseg_visualize_gt", "coco", args.gt[0], args.gt[1])
    elif name not in DatasetCatalog.list():
        raise KeyError("Dataset {!r} is not registered; use --gt JSON IMAGE_ROOT".format(name))
    per_image = load_results(args.results)
    written = visualize(name, per_image, args.output, args.score_thresh, args.max_images)
    print("{} images (ground truth | predictions with score >= {:.2f}) in {}".format(
        len(written), args.score_thresh, args.output))
    return written


if __name__ == "__main__":
    main()
