#!/usr/bin/env python
"""
The main job on the built-in demo data (``make demo``): generate the synthetic demo dataset
(320 x 240 images), build the memory from its references, segment its targets, print COCO
bbox/segm metrics, write visualisations next to the ground truth and the run report
(``OUTPUT_DIR/report.html``, as tools/train_net.py writes it).

    python tools/run_demo.py                    # official checkpoints under checkpoints/
    python tools/run_demo.py --weights random   # offline: random weights, meaningless numbers
"""
import argparse
import logging
import os
import sys

import torch
from detectron2.data import DatasetCatalog
from detectron2.data.datasets import register_coco_instances
from detectron2.utils.logger import setup_logger

from refseg_d2 import RefSegTrainer
from refseg_d2.engine import build_cfg
from refseg_d2.reporting import try_write_run_report
from refseg_d2.reporting.gallery import draw_pair, load_predictions, results_file
from refseg_d2.testing import make_demo_dataset, write_random_checkpoints
from refseg_d2.testing.synthetic import DEMO_SIZE

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

BANNER = "#" * 78


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--weights", choices=("official", "random"), default="official",
                   help="official: checkpoints/ (see tools/download_checkpoints.sh); random: offline")
    p.add_argument("--output", default=None, help="output folder (default: the config's OUTPUT_DIR)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--score-thresh", type=float, default=0.3, help="visualisation score threshold")
    return p.parse_args()


def demo_cfg(args):
    name = "refseg_demo_random.yaml" if args.weights == "random" else "refseg_demo.yaml"
    cfg = build_cfg(os.path.join(REPO, "configs", "demo", name))
    if args.output:
        cfg.OUTPUT_DIR = args.output
    cfg.MODEL.DEVICE = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.weights == "random":
        sam2, dinov2 = write_random_checkpoints(
            os.path.join(cfg.OUTPUT_DIR, "random_weights"), cfg.MODEL.REFSEG.SAM2.CONFIG,
            cfg.MODEL.REFSEG.ENCODER.NAME, cfg.MODEL.REFSEG.SAM2.INPUT_SIZE,
        )
        cfg.MODEL.REFSEG.SAM2.WEIGHTS, cfg.MODEL.REFSEG.ENCODER.WEIGHTS = sam2, dinov2
    else:
        for key in ("SAM2", "ENCODER"):
            path = cfg.MODEL.REFSEG[key].WEIGHTS
            if not os.path.isfile(path):
                sys.exit(
                    "Missing official checkpoint {} (MODEL.REFSEG.{}.WEIGHTS). Run "
                    "tools/download_checkpoints.sh, or `make demo WEIGHTS=random` offline.".format(
                        path, key
                    )
                )
    cfg.DATASETS.REFERENCE = ("refseg_demo_refs",)
    cfg.DATASETS.TEST = ("refseg_demo_targets",)
    return cfg


def visualise(cfg, dataset_name, out_dir, score_thresh):
    """ground truth | predictions of every target, from the predictions the evaluator wrote."""
    os.makedirs(out_dir, exist_ok=True)
    per_image = load_predictions(results_file(cfg.OUTPUT_DIR, dataset_name))
    for d in DatasetCatalog.get(dataset_name):
        pair = draw_pair(dataset_name, d, per_image.get(d["image_id"], []), score_thresh,
                         min_width=0)
        pair.save(os.path.join(out_dir, os.path.basename(d["file_name"])))
    return out_dir


def main():
    args = parse_args()
    cfg = demo_cfg(args)
    os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
    setup_logger(output=cfg.OUTPUT_DIR)
    logger = setup_logger(output=cfg.OUTPUT_DIR, name="refseg_d2")
    if args.weights == "random":
        logger.warning(
            "\n%s\n# RANDOM WEIGHTS: no pretrained SAM 2 / DINOv2 is used. The pipeline runs end to\n"
            "# end, but its detections and metrics are MEANINGLESS. Use the official\n"
            "# checkpoints (tools/download_checkpoints.sh) for real results.\n%s", BANNER, BANNER,
        )
    data = make_demo_dataset(os.path.join(cfg.OUTPUT_DIR, "data"), size=DEMO_SIZE)
    for name, split in (("refseg_demo_refs", data["refs"]), ("refseg_demo_targets", data["targets"])):
        if name not in DatasetCatalog.list():
            register_coco_instances(name, {}, split[0], split[1])
    cfg.freeze()

    model = RefSegTrainer.build_model(cfg)
    results = RefSegTrainer.test(cfg, model)
    vis_dir = visualise(cfg, "refseg_demo_targets", os.path.join(cfg.OUTPUT_DIR, "vis"),
                        args.score_thresh)
    report = try_write_run_report(cfg, model, results, score_thresh=args.score_thresh)
    print("\nCOCO metrics on the demo targets ({} weights):".format(args.weights))
    for task, metrics in results.items():
        print("  {}: AP {:.1f}  AP50 {:.1f}  AP75 {:.1f}".format(
            task, metrics["AP"], metrics["AP50"], metrics["AP75"]))
    print("Visualisations (ground truth | predictions): {}".format(vis_dir))
    print("Memory: {}".format(os.path.join(cfg.OUTPUT_DIR, cfg.MODEL.REFSEG.MEMORY.SAVE_NAME + ".pth")))
    print("Report (open in a browser): {}".format(report or "not written, see the warning above"))
    if args.weights == "random":
        print("\n!!! RANDOM WEIGHTS: these numbers are meaningless (plumbing check only). !!!")
    logging.shutdown()


if __name__ == "__main__":
    main()
