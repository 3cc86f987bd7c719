#!/usr/bin/env python
"""
The main job on the built-in demo data (``make demo``): generate the synthetic demo dataset,
build the memory from its references, segment its targets, print COCO bbox/segm metrics and
write visualisations next to the ground truth.

    python tools/run_demo.py                    # official checkpoints under checkpoints/
    python tools/run_demo.py --weights random   # offline: random weights, meaningless numbers
"""
import argparse
import logging
import os
import sys

import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_instances
from detectron2.utils.logger import setup_logger
from detectron2.utils.visualizer import Visualizer
from PIL import Image

from refseg_d2 import RefSegTargetMapper, RefSegTrainer
from refseg_d2.engine import build_cfg
from refseg_d2.testing import make_demo_dataset, write_random_checkpoints
from refseg_d2.utils.images import read_rgb

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


def visualise(cfg, model, dataset_name, out_dir, score_thresh):
    os.makedirs(out_dir, exist_ok=True)
    meta = MetadataCatalog.get(dataset_name)
    mapper = RefSegTargetMapper(cfg)
    for d in DatasetCatalog.get(dataset_name):
        with torch.no_grad():
            inst = model([mapper(d)])[0]["instances"].to("cpu")
        inst = inst[inst.scores >= score_thresh]
        image = read_rgb(d["file_name"])
        pred = Visualizer(image, meta).draw_instance_predictions(inst).get_image()
        gt = Visualizer(image, meta).draw_dataset_dict(d).get_image()
        canvas = Image.new("RGB", (image.width * 2 + 4, image.height), "white")
        canvas.paste(Image.fromarray(gt), (0, 0))
        canvas.paste(Image.fromarray(pred), (image.width + 4, 0))
        canvas.save(os.path.join(out_dir, os.path.basename(d["file_name"])))
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
    data = make_demo_dataset(os.path.join(cfg.OUTPUT_DIR, "data"))
    for name, split in (("refseg_demo_refs", data["refs"]), ("refseg_demo_targets", data["targets"])):
        if name not in DatasetCatalog.list():
            register_coco_instances(name, {}, split[0], split[1])
    cfg.freeze()

    model = RefSegTrainer.build_model(cfg)
    results = RefSegTrainer.test(cfg, model)
    vis_dir = visualise(cfg, model, "refseg_demo_targets", os.path.join(cfg.OUTPUT_DIR, "vis"),
                        args.score_thresh)
    print("\nCOCO metrics on the demo targets ({} weights):".format(args.weights))
    for task, metrics in results.items():
        print("  {}: AP {:.1f}  AP50 {:.1f}  AP75 {:.1f}".format(
            task, metrics["AP"], metrics["AP50"], metrics["AP75"]))
    print("Visualisations (ground truth | predictions): {}".format(vis_dir))
    print("Memory: {}".format(os.path.join(cfg.OUTPUT_DIR, cfg.MODEL.REFSEG.MEMORY.SAVE_NAME + ".pth")))
    if args.weights == "random":
        print("\n!!! RANDOM WEIGHTS: these numbers are meaningless (plumbing check only). !!!")
    logging.shutdown()


if __name__ == "__main__":
    main()
