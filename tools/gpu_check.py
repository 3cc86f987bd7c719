#!/usr/bin/env python
"""
Speed and precision check without checkpoints, in one call: random SAM 2 + DINOv2 weights in the
official formats (made prompt-sensitive, see ``refseg_d2.testing.random_weights``), synthetic
640 x 480 references and targets, and per setting (point grid x NMS threshold) every precision
mode of the same config against fp32.

    python tools/gpu_check.py --output DIR                              # CUDA, the paper's models
    python tools/gpu_check.py --output DIR --setting small --device cpu  # Hiera-T + ViT-S/14
    python tools/gpu_check.py --output DIR --setting tiny --device cpu   # the tiny test config

Settings (``--setting``): "paper" SAM 2 Hiera-L at 1024 px + DINOv2 ViT-L/14 at 518 px; "small"
Hiera-T at 1024 px + ViT-S/14 at 518 px (the CPU benchmark's models); "tiny" the tiny CPU config
(Hiera-T at 256 px, ViT-S/14 at 112 px). Each runs every ``--grids`` (points per side) with every
``--nms`` (NMS_THRESH; 1.0 keeps every proposal up to the 100 detections).

Modes (``--modes``; fp32 always runs first, it is the reference of each setting): fp32 (the
default config), official (SAM 2's own decoder, fp32: the audit path), tf32, bf16, fp16 (CUDA
only: ACCEL.AMP's mixed precision, see ``refseg_d2.modeling.precision``), compile and
bf16_compile (ACCEL.COMPILE; compiling costs minutes per model, so the compiled modes run at the
first setting only). Default: every mode on CUDA; fp32 and bf16 on a CPU.

Per mode: seconds per image per stage and in all, the speed ratio to fp32, the agreement with
fp32 (share of predictions matched one for one: same class, mask IoU >= 0.9, score within 0.02;
and "exact": mask IoU >= 0.98, score within 1e-3), COCO bbox and segm AP of the timed images
(random weights on synthetic shapes: low but not 0) and their change from fp32, detections, peak
GPU memory (reset per mode). With 2+ visible GPUs it also times a 2-process
``tools/train_net.py --eval-only`` run. Writes DIR/gpu_check.json and prints the table.
"""
import argparse
import itertools
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
from refseg_d2.utils.files import atomic_write
from refseg_d2.utils.timing import clock, time_batches

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SETTINGS = {
    "paper": {"config": "configs/Base-RefSeg.yaml", "sam2": "configs/sam2/sam2_hiera_l.yaml",
              "encoder": "dinov2_vitl14", "sam2_size": 1024, "encoder_size": 518, "grids": [32, 16]},
    "small": {"config": "configs/quick_schedules/refseg_tiny_cpu.yaml",
              "sam2": "configs/sam2/sam2_hiera_t.yaml", "encoder": "dinov2_vits14", "sam2_size": 1024,
              "encoder_size": 518, "grids": [32, 16]},
    "tiny": {"config": "configs/quick_schedules/refseg_tiny_cpu.yaml",
             "sam2": "configs/sam2/sam2_hiera_t.yaml", "encoder": "dinov2_vits14", "sam2_size": 256,
             "encoder_size": 112, "grids": [8]},
}
_D, _AMP, _C = "MODEL.REFSEG.SAM2.DECODER", "MODEL.REFSEG.ACCEL.AMP", "MODEL.REFSEG.ACCEL.COMPILE"
MODES = OrderedDict([
    ("fp32", []),
    ("official", [_D, "official"]),
    ("tf32", ["MODEL.REFSEG.ACCEL.TF32", True]),
    ("bf16", [_AMP, "bf16"]),
    ("fp16", [_AMP, "fp16"]),
    ("compile", [_C, "inductor"]),
    ("bf16_compile", [_AMP, "bf16", _C, "inductor"]),
])
CUDA_ONLY = ("tf32", "fp16")
# Agreement with fp32: (mask IoU, score tolerance) of a one-for-one match.
AGREE, EXACT = (0.9, 0.02), (0.98, 1e-3)
# The share of matched predictions, in every setting, above which bf16 is recommended.
RECOMMEND_AGREEMENT = 0.95


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output", required=True, help="folder of gpu_check.json, weights and data")
    p.add_argument("--setting", default="paper", choices=list(SETTINGS), help="models and sizes")
    p.add_argument("--device", default="cuda", help="cuda or cpu")
    p.add_argument("--grids", type=int, nargs="+", help="points per side (default: the setting's)")
    p.add_argument("--nms", type=float, nargs="+", default=[0.5, 1.0], help="NMS thresholds")
    p.add_argument("--num-images", type=int, default=3, help="timed target images per mode")
    p.add_argument("--warmup", type=int, default=1, help="untimed target images per mode")
    p.add_argument("--modes", nargs="*", choices=list(MODES),
                   help="modes to run (default: all on CUDA, fp32 and bf16 on a CPU)")
    p.add_argument("--compile-backend", default="inductor",
                   help="ACCEL.COMPILE of the compiled modes (inductor, eager, aot_eager)")
    p.add_argument("--no-multi-gpu", action="store_true", help="skip the 2-process run")
    args = p.parse_args(argv)
    cuda = args.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        raise SystemExit("--device {}: CUDA is not available (torch {}); see docs/INSTALL.md for "
                         "the build matching your driver, or use --device cpu".format(
                             args.device, torch.__version__))
    if args.modes is None:
        args.modes = list(MODES) if cuda else ["fp32", "bf16"]
    if not cuda and set(args.modes) & set(CUDA_ONLY):
        p.error("--modes {} need --device cuda".format(" ".join(sorted(set(args.modes) & set(CUDA_ONLY)))))
    args.modes = ["fp32"] + [m for m in args.modes if m != "fp32"]
    args.grids = args.grids or SETTINGS[args.setting]["grids"]
    return args


def prepare(args):
    """Random checkpoints, synthetic data and registered datasets; returns (setup, opts)."""
    setup = SETTINGS[args.setting]
    weights = write_random_checkpoints(os.path.join(args.output, "weights"), setup["sam2"],
                                       setup["encoder"], setup["sam2_size"], seed=0)
    data = os.path.join(args.output, "data")
    splits = {"gpu_check_refs": make_split(data, "refs", 6, seed=0, size=(640, 480), overlap_every=0),
              "gpu_check_targets": make_split(data, "targets", args.warmup + args.num_images, seed=1,
                                              size=(640, 480), first_image_id=101)}
    for name, split in splits.items():
        register_coco_file(name, *split)
    opts = ["MODEL.REFSEG.SAM2.WEIGHTS", weights[0], "MODEL.REFSEG.ENCODER.WEIGHTS", weights[1],
            "MODEL.REFSEG.SAM2.CONFIG", setup["sam2"], "MODEL.REFSEG.ENCODER.NAME", setup["encoder"],
            "MODEL.REFSEG.SAM2.INPUT_SIZE", setup["sam2_size"],
            "MODEL.REFSEG.ENCODER.INPUT_SIZE", setup["encoder_size"],
            "MODEL.DEVICE", args.device, "DATASETS.REFERENCE", ("gpu_check_refs",),
            "DATASETS.TEST", ("gpu_check_targets",), "DATALOADER.NUM_WORKERS", 2]
    return setup, opts


def run_mode(cfg, warmup):
    """
    Build, fill the memory, time the targets after ``warmup`` images and evaluate the timed ones
    with the config's evaluator; returns (report, predictions per timed image).
    """
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
        dataset = cfg.DATASETS.TEST[0]
        loader = RefSegTrainer.build_test_loader(cfg, dataset)
        timed = time_batches(model, loader, warmup, device, keep=lambda inputs, outputs: (
            inputs, [{"instances": o["instances"].to("cpu")} for o in outputs]))
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
    evaluator = RefSegTrainer.build_evaluator(cfg, dataset)
    evaluator.reset()
    for inputs, outputs in timed["kept"]:
        evaluator.process(inputs, outputs)
    results = evaluator.evaluate()
    predictions = [o["instances"] for _, outputs in timed["kept"] for o in outputs]
    wall = timed["model_s"]
    report = {"setup_s": setup_s, "per_image_s": model.timer.per_image(),
              "images": len(predictions), "images_per_s": len(predictions) / wall if wall else 0.0,
              "ap": {task: results[task]["AP"] for task in ("bbox", "segm") if task in results},
              "detections": sum(len(p) for p in predictions)}
    if device.startswith("cuda"):
        report["peak_gpu_allocated_mib"] = torch.cuda.max_memory_allocated() / 2**20
        report["peak_gpu_reserved_mib"] = torch.cuda.max_memory_reserved() / 2**20
    del model
    return report, predictions


def compare(report, reference_report, reference, predictions):
    """Agreement, speed ratio and AP change of a mode against the setting's fp32 run."""
    total = sum(report["per_image_s"].values())
    report["s_per_image"] = total
    report["speed_ratio"] = sum(reference_report["per_image_s"].values()) / total if total else 0.0
    report["agreement"] = match_share(reference, predictions, *AGREE)
    report["exact"] = match_share(reference, predictions, *EXACT)
    report["ap_change"] = {task: ap - reference_report["ap"][task] for task, ap in report["ap"].items()}


def multi_gpu_run(args, setup, opts):
    """Time a 2-process eval-only run with tools/train_net.py (2+ GPUs only)."""
    out = os.path.join(args.output, "two_process")
    cmd = [sys.executable, os.path.join(REPO, "tools", "train_net.py"), "--num-gpus", "2",
           "--eval-only", "--config-file", os.path.join(REPO, setup["config"])]
    for name in ("gpu_check_refs", "gpu_check_targets"):
        meta = MetadataCatalog.get(name)
        cmd += ["--register", name, meta.json_file, meta.image_root]
    cmd += [str(v) for v in opts]
    cmd += ["MODEL.REFSEG.POINTS_PER_SIDE", str(args.grids[0]), "OUTPUT_DIR", out]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    return {"processes": 2, "wall_s": time.perf_counter() - start, "returncode": proc.returncode,
            "log_tail": proc.stderr[-2000:] if proc.returncode else ""}


def recommendation(runs):
    """Whether bf16 agrees with fp32 in every setting it ran (None where it did not run)."""
    shares = [run["modes"]["bf16"]["agreement"] for run in runs if "bf16" in run["modes"]]
    if not shares:
        return None
    return {"min_agreement": min(shares), "bf16_recommended": min(shares) >= RECOMMEND_AGREEMENT}


def table(runs):
    headers = ["grid", "NMS", "mode", "s/img", "x fp32", "agree", "exact", "AP bbox", "AP segm",
               "dAP segm", "dets", "peak GPU MiB"]
    rows = []
    for run in runs:
        for name, m in run["modes"].items():
            rows.append([run["points_per_side"], run["nms_thresh"], name, "{:.3f}".format(m["s_per_image"]),
                         "{:.2f}".format(m["speed_ratio"]), "{:.3f}".format(m["agreement"]),
                         "{:.3f}".format(m["exact"]), "{:.2f}".format(m["ap"].get("bbox", 0.0)),
                         "{:.2f}".format(m["ap"].get("segm", 0.0)),
                         "{:+.2f}".format(m["ap_change"].get("segm", 0.0)), m["detections"],
                         "{:.0f}".format(m.get("peak_gpu_allocated_mib", 0))])
    return tabulate(rows, headers=headers, tablefmt="pipe")


def main(argv=None):
    args = parse_args(argv)
    os.makedirs(args.output, exist_ok=True)
    setup, opts = prepare(args)
    runs = []
    for index, (grid, nms) in enumerate(itertools.product(args.grids, args.nms)):
        setting_opts = opts + ["MODEL.REFSEG.POINTS_PER_SIDE", grid, "MODEL.REFSEG.NMS_THRESH", nms]
        modes, reference = OrderedDict(), None
        for name in args.modes:
            if index > 0 and _C in MODES[name]:
                continue
            mode_opts = [args.compile_backend if v == "inductor" else v for v in MODES[name]]
            cfg = build_cfg(os.path.join(REPO, setup["config"]), setting_opts + mode_opts,
                            output_dir=os.path.join(args.output, "grid{}_nms{}".format(grid, nms), name))
            report, predictions = run_mode(cfg, args.warmup)
            if reference is None:
                reference = predictions
            compare(report, modes.get("fp32", report), reference, predictions)
            modes[name] = report
            print("grid {} NMS {} {}: {:.3f} s/image, agreement {:.3f}, AP segm {:.2f}".format(
                grid, nms, name, report["s_per_image"], report["agreement"],
                report["ap"].get("segm", 0.0)), flush=True)
        runs.append({"points_per_side": grid, "nms_thresh": nms, "modes": modes})
    result = {"device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
              "torch": torch.__version__, "setting": args.setting, "threads": torch.get_num_threads(),
              "num_images": args.num_images, "warmup": args.warmup, "agreement_rule": {
                  "agree": {"mask_iou": AGREE[0], "score_tol": AGREE[1]},
                  "exact": {"mask_iou": EXACT[0], "score_tol": EXACT[1]}},
              "runs": runs, "recommendation": recommendation(runs)}
    if args.device.startswith("cuda") and torch.cuda.device_count() >= 2 and not args.no_multi_gpu:
        result["two_process"] = multi_gpu_run(args, setup, opts)
    print(table(runs))
    if result["recommendation"] is not None:
        print("bf16: lowest agreement {:.3f} -> {}".format(
            result["recommendation"]["min_agreement"],
            "recommended" if result["recommendation"]["bf16_recommended"] else "not recommended"))
    path = os.path.join(args.output, "gpu_check.json")
    atomic_write(path, lambda f: json.dump(result, f, indent=2), mode="w", what="the check's results")
    print("JSON: {}".format(path))
    return result


if __name__ == "__main__":
    main()
