#!/usr/bin/env python
"""
Accelerator check without checkpoints: random SAM 2 Hiera-L + DINOv2 ViT-L/14 weights written
in the official formats, the paper's settings (32 x 32 grid, SAM 2 at 1024 px, DINOv2 at
518 px), synthetic 640 x 480 targets. Per mode: per-stage seconds per image, images/s, peak
GPU memory (reset per mode) and agreement with the fp32 path (share of predictions matched one
for one: same class, mask IoU >= 0.98, score within 1e-3). With 2+ visible GPUs it also times a
2-process ``tools/train_net.py --eval-only`` run.

    python tools/gpu_check.py --output DIR                  # one CUDA GPU, ~8 min on an H100
    python tools/gpu_check.py --output DIR --tiny --device cpu   # tiny config, CPU, minutes

Modes: fp32 (official decoder: the reference computation), shared (the shared decoder, fp32),
tf32, bf16 and bf16_compile (all with the shared decoder). Writes DIR/gpu_check.json
({"modes": {"fp32": {..., "agreement": ...}, ...}}) and prints a table.
"""
import argparse
import json
import os
import subprocess
import sys
import time
from collections import OrderedDict

import torch
from detectron2.data import MetadataCatalog
from tabulate import tabulate

from refseg_d2 import RefSegTrainer, fill_memory
from refseg_d2.data.reference_sources import register_coco_file
from refseg_d2.engine import build_cfg
from refseg_d2.evaluation.agreement import match_share
from refseg_d2.testing.random_weights import write_random_checkpoints
from refseg_d2.testing.synthetic import make_split
from refseg_d2.utils.timing import clock, time_batches

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAPER = {"config": "configs/Base-RefSeg.yaml", "sam2": "configs/sam2/sam2_hiera_l.yaml",
         "encoder": "dinov2_vitl14", "sam2_size": 1024}
TINY = {"config": "configs/quick_schedules/refseg_tiny_cpu.yaml", "sam2": "configs/sam2/sam2_hiera_t.yaml",
        "encoder": "dinov2_vits14", "sam2_size": 256}
MODES = OrderedDict([
    ("fp32", ["MODEL.REFSEG.SAM2.DECODER", "official"]),
    ("shared", ["MODEL.REFSEG.SAM2.DECODER", "shared"]),
    ("tf32", ["MODEL.REFSEG.SAM2.DECODER", "shared", "MODEL.REFSEG.ACCEL.TF32", True]),
    ("bf16", ["MODEL.REFSEG.SAM2.DECODER", "shared", "MODEL.REFSEG.ACCEL.AMP", "bf16"]),
    ("bf16_compile", ["MODEL.REFSEG.SAM2.DECODER", "shared", "MODEL.REFSEG.ACCEL.AMP", "bf16",
                      "MODEL.REFSEG.ACCEL.COMPILE", "inductor"]),
])


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output", required=True, help="folder of gpu_check.json, weights and data")
    p.add_argument("--tiny", action="store_true", help="the tiny CPU config instead of the paper's")
    p.add_argument("--device", default="cuda", help="cuda or cpu")
    p.add_argument("--num-images", type=int, default=3, help="timed target images per mode")
    p.add_argument("--warmup", type=int, default=1, help="untimed target images per mode")
    p.add_argument("--modes", nargs="*", default=list(MODES), choices=list(MODES),
                   help="modes to run (fp32 always runs first: it is the reference)")
    p.add_argument("--compile-backend", default="inductor",
                   help="ACCEL.COMPILE of the compiled modes (inductor, eager, aot_eager)")
    p.add_argument("--no-multi-gpu", action="store_true", help="skip the 2-process run")
    args = p.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("--device {}: CUDA is not available (torch {}); see docs/INSTALL.md for "
                         "the build matching your driver, or use --device cpu".format(
                             args.device, torch.__version__))
    args.modes = ["fp32"] + [m for m in args.modes if m != "fp32"]
    return args


def prepare(args):
    """Random checkpoints, synthetic data and registered datasets; returns (setup, opts)."""
    setup = TINY if args.tiny else PAPER
    weights = write_random_checkpoints(os.path.join(args.output, "weights"), setup["sam2"],
                                       setup["encoder"], setup["sam2_size"], seed=0)
    data = os.path.join(args.output, "data")
    splits = {"gpu_check_refs": make_split(data, "refs", 3, seed=0, size=(640, 480), overlap_every=0),
              "gpu_check_targets": make_split(data, "targets", args.warmup + args.num_images, seed=1,
                                              size=(640, 480), first_image_id=101)}
    for name, split in splits.items():
        register_coco_file(name, *split)
    opts = ["MODEL.REFSEG.SAM2.WEIGHTS", weights[0], "MODEL.REFSEG.ENCODER.WEIGHTS", weights[1],
            "MODEL.DEVICE", args.device, "DATASETS.REFERENCE", ("gpu_check_refs",),
            "DATASETS.TEST", ("gpu_check_targets",), "DATALOADER.NUM_WORKERS", 2]
    return setup, opts, splits


def run_mode(cfg, warmup):
    """Build, fill the memory, time the targets; returns (report, predictions per image)."""
    device = cfg.MODEL.DEVICE
    tf32 = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    try:
        torch._dynamo.reset()
        start = time.perf_counter()
        model = RefSegTrainer.build_model(cfg)
        fill_memory(cfg, model)
        setup_s = clock(device) - start
        loader = RefSegTrainer.build_test_loader(cfg, cfg.DATASETS.TEST[0])
        timed = time_batches(model, loader, warmup, device,
                             keep=lambda outputs: [o["instances"].to("cpu") for o in outputs])
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
    predictions = [p for batch in timed["kept"] for p in batch]
    wall = timed["model_s"]
    report = {"setup_s": setup_s, "per_image_s": model.timer.per_image(),
              "images": len(predictions), "images_per_s": len(predictions) / wall if wall else 0.0}
    if device.startswith("cuda"):
        report["peak_gpu_allocated_mib"] = torch.cuda.max_memory_allocated() / 2**20
        report["peak_gpu_reserved_mib"] = torch.cuda.max_memory_reserved() / 2**20
    del model
    return report, predictions


def multi_gpu_run(args, setup, opts):
    """Time a 2-process eval-only run with tools/train_net.py (2+ GPUs only)."""
    out = os.path.join(args.output, "two_process")
    cmd = [sys.executable, os.path.join(REPO, "tools", "train_net.py"), "--num-gpus", "2",
           "--eval-only", "--config-file", os.path.join(REPO, setup["config"])]
    for name in ("gpu_check_refs", "gpu_check_targets"):
        meta = MetadataCatalog.get(name)
        cmd += ["--register", name, meta.json_file, meta.image_root]
    cmd += [str(v) for v in opts]
    cmd += ["MODEL.REFSEG.SAM2.DECODER", "shared", "OUTPUT_DIR", out]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    return {"processes": 2, "wall_s": time.perf_counter() - start, "returncode": proc.returncode,
            "log_tail": proc.stderr[-2000:] if proc.returncode else ""}


def main(argv=None):
    args = parse_args(argv)
    os.makedirs(args.output, exist_ok=True)
    setup, opts, _ = prepare(args)
    modes, reference = OrderedDict(), None
    for name in args.modes:
        mode_opts = list(MODES[name])
        if "MODEL.REFSEG.ACCEL.COMPILE" in mode_opts:
            mode_opts[mode_opts.index("MODEL.REFSEG.ACCEL.COMPILE") + 1] = args.compile_backend
        cfg = build_cfg(os.path.join(REPO, setup["config"]), opts + mode_opts,
                        output_dir=os.path.join(args.output, name))
        report, predictions = run_mode(cfg, args.warmup)
        reference = predictions if reference is None else reference
        report["agreement"] = match_share(reference, predictions)
        report["detections"] = sum(len(p) for p in predictions)
        modes[name] = report
        print("{}: {:.3f} s/image, agreement {:.3f}".format(
            name, sum(report["per_image_s"].values()), report["agreement"]), flush=True)
    result = {"device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
              "torch": torch.__version__, "setting": "tiny" if args.tiny else "paper",
              "modes": modes}
    if args.device.startswith("cuda") and torch.cuda.device_count() >= 2 and not args.no_multi_gpu:
        result["two_process"] = multi_gpu_run(args, setup, opts)
    stages = list(modes["fp32"]["per_image_s"])
    rows = [[name] + ["{:.3f}".format(m["per_image_s"].get(s, 0.0)) for s in stages]
            + ["{:.2f}".format(m["images_per_s"]), "{:.0f}".format(m.get("peak_gpu_allocated_mib", 0)),
               "{:.3f}".format(m["agreement"])] for name, m in modes.items()]
    print(tabulate(rows, headers=["mode"] + stages + ["img/s", "peak GPU MiB", "agreement"],
                   tablefmt="pipe"))
    path = os.path.join(args.output, "gpu_check.json")
    with open(path, "w") as f:
        json.dump(result, f, indent=2)
    print("JSON: {}".format(path))
    return result


if __name__ == "__main__":
    main()
