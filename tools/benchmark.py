#!/usr/bin/env python
"""
Speed benchmark of refseg_d2: per-stage time, images per second and peak memory for a config
on the first N images of its test dataset, as a table and as JSON. Works on CPU and GPU.

    python tools/benchmark.py --config-file configs/refseg_sam2l_dinov2l.yaml --num-images 20 \
        --register refs refs.json imgs/ --register test test.json imgs/ \
        DATASETS.REFERENCE '("refs",)' DATASETS.TEST '("test",)'

Without datasets in the config it benchmarks the synthetic demo data. ``--sweep K`` also
measures what a one-pass sweep costs: K runs with different reference subsets (seeds) evaluated
together by ``refseg_d2.engine.run_sweep`` against one run alone through the same code (memory
filling, proposals, matching, evaluation) on the first N test images; it reports the ratio, and
the ratio from the sweep's own phases (unmoved by load changes between the two measurements).
``--target-sizes 640x480 1920x1080`` also times inference on synthetic targets of those sizes.
``--predictions FILE`` also writes the timed images' predictions (COCO results with RLE masks,
dataset category ids), e.g. to compare them with another implementation's.

What is measured: target images are read and squashed in loader workers
(``DATALOADER.NUM_WORKERS``, the test loader of train_net); "image_loading" is the time spent
waiting for the loader. CUDA is synchronised before every clock read. Peak memory is reset per
phase (model build, memory filling, inference, each target size, the sweep): on CUDA the
allocator's peak allocated and reserved bytes; on CPU the peak resident set size sampled every
5 ms by a thread (``/proc/self/statm``; a spike shorter than that can be missed), next to the
process-lifetime peak (``getrusage``), which can only grow.
"""
import json
import logging
import os
import shutil
import tempfile
from collections import OrderedDict

import torch
from detectron2.utils.logger import setup_logger

from refseg_d2 import RefSegTrainer, fill_memory
from refseg_d2.data.datasets.subsets import first_images, shots_subset
from refseg_d2.data.reference_sources import register_coco_file
from refseg_d2.engine import SweepRun, run_sweep
from refseg_d2.engine.defaults import refseg_tool_parser, tool_setup
from refseg_d2.reporting.speed import format_benchmark
from refseg_d2.testing import make_demo_dataset
from refseg_d2.testing.synthetic import make_split
from refseg_d2.utils.files import atomic_write
from refseg_d2.utils.peak_memory import PeakMemory
from refseg_d2.utils.timing import clock, time_batches

logger = logging.getLogger("refseg_d2.benchmark")


def parse_args(argv=None):
    p = refseg_tool_parser(__doc__)
    p.add_argument("--num-images", type=int, default=10, help="target images to time")
    p.add_argument("--warmup", type=int, default=1, help="untimed images first")
    p.add_argument("--sweep", type=int, default=0,
                   help="also time a one-pass sweep of K runs against one run")
    p.add_argument("--shots", type=int, default=1, help="references per class in sweep runs")
    p.add_argument("--output", default="output/benchmark", help="folder of the JSON and the data")
    p.add_argument("--target-sizes", nargs="*", default=[], metavar="WxH",
                   help="also time inference on synthetic targets of these sizes, e.g. 640x480")
    p.add_argument("--size-images", type=int, default=1, help="images per target size")
    p.add_argument("--predictions", metavar="FILE",
                   help="also write the timed images' predictions (COCO results JSON)")
    args = p.parse_args(argv)
    args.target_sizes = [parse_size(v) for v in args.target_sizes]
    return args


def parse_size(text):
    """'640x480' -> (640, 480); errors name the option."""
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise SystemExit("--target-sizes: {!r} is not WIDTHxHEIGHT (e.g. 640x480)".format(text))
    if width < 1 or height < 1:
        raise SystemExit("--target-sizes: {!r} must be positive".format(text))
    return width, height


def benchmark_cfg(args):
    cfg = tool_setup(args, output_dir=args.output)
    if not cfg.DATASETS.TEST:
        data = make_demo_dataset(os.path.join(args.output, "data"))
        for name, split in (("bench_refs", data["refs"]), ("bench_targets", data["targets"])):
            register_coco_file(name, *split)
        cfg.DATASETS.REFERENCE, cfg.DATASETS.TEST = ("bench_refs",), ("bench_targets",)
    return cfg


def time_inference(cfg, model, num_images, warmup, dataset=None, kept=None):
    """
    Run the model on the first images of ``dataset`` (default DATASETS.TEST[0]) through the
    trainer's test loader (workers decode and squash images); per-stage seconds per image, and
    the seconds of the model calls ("model_s", the stages and what lies between them).
    ``kept`` (a list): (image_id, Instances) of each timed image are appended to it.
    """
    name = first_images(dataset or cfg.DATASETS.TEST[0], warmup + num_images)
    loader = RefSegTrainer.build_test_loader(cfg, name)

    def keep(inputs, outputs):
        kept.extend((d["image_id"], o["instances"]) for d, o in zip(inputs, outputs))

    timed = time_batches(model, loader, warmup, cfg.MODEL.DEVICE,
                         keep=None if kept is None else keep)
    wall = timed["wall_s"]
    stages = OrderedDict([("image_loading", timed["load_s"] / max(model.timer.num_images, 1))])
    stages.update(model.timer.per_image())
    return {"images": model.timer.num_images, "wall_s": wall, "model_s": timed["model_s"],
            "images_per_s": model.timer.num_images / wall if wall > 0 else 0.0,
            "per_image_s": stages}


def write_predictions(path, dataset, kept):
    """COCO results (RLE masks, the dataset's category ids) of ``kept`` (image_id, Instances)
    pairs, written to ``path``; returns the path."""
    from detectron2.data import MetadataCatalog
    from detectron2.evaluation.coco_evaluation import instances_to_coco_json

    to_contiguous = MetadataCatalog.get(dataset).get("thing_dataset_id_to_contiguous_id", None)
    to_id = {v: k for k, v in (to_contiguous or {}).items()}
    results = []
    for image_id, instances in kept:
        for r in instances_to_coco_json(instances.to("cpu"), image_id):
            r["category_id"] = to_id.get(r["category_id"], r["category_id"])
            results.append(r)
    atomic_write(path, lambda f: json.dump(results, f), mode="w", what="the predictions")
    return path


def time_target_sizes(cfg, model, args):
    """Inference time and peak memory on synthetic targets of each --target-sizes size."""
    out = OrderedDict()
    root = os.path.join(args.output, "target_sizes")
    for width, height in args.target_sizes:
        key = "{}x{}".format(width, height)
        name = "bench_size_{}".format(key)
        split = make_split(root, name, args.size_images, seed=width * 7 + height, size=(width, height))
        register_coco_file(name, *split)
        with PeakMemory(cfg.MODEL.DEVICE) as peak:
            result = time_inference(cfg, model, args.size_images, 0, dataset=name)
        result["peak_memory"] = peak.result
        out[key] = result
    return out


def sweep(cfg, model, args):
    """
    One run alone against a one-pass sweep of K runs (reference subsets of ``--shots`` per
    class, seeds 0..K-1), both through ``run_sweep`` on the first ``--num-images`` test images:
    memory filling, proposals, matching and evaluation (files in a temporary folder, removed).
    The model is built once and not timed (a sweep builds it once too).
    """
    ref = cfg.DATASETS.REFERENCE[0]
    run_cfg = cfg.clone()
    run_cfg.DATASETS.TEST = (first_images(cfg.DATASETS.TEST[0], args.num_images),)
    folder = tempfile.mkdtemp(prefix="sweep_", dir=args.output)

    def timed(num_runs):
        runs = [SweepRun("{}shot_seed{}".format(args.shots, seed),
                         (shots_subset(ref, args.shots, seed),),
                         os.path.join(folder, "{}_runs".format(num_runs), "seed{}".format(seed)))
                for seed in range(num_runs)]
        start = clock(cfg.MODEL.DEVICE)
        _, phases = run_sweep(run_cfg, model, runs)
        return clock(cfg.MODEL.DEVICE) - start, phases

    try:
        single_s, single = timed(1)
        sweep_s, swept = timed(args.sweep)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    ratio = sweep_s / single_s if single_s > 0 else float("nan")
    return {"runs": args.sweep, "images": args.num_images, "single_run_s": single_s,
            "sweep_s": sweep_s, "sweep_over_single_run": ratio,
            "single_run_phases": single, "sweep_phases": swept}


def main(argv=None):
    args = parse_args(argv)
    os.makedirs(args.output, exist_ok=True)
    setup_logger(name="refseg_d2")
    cfg = benchmark_cfg(args)
    device = cfg.MODEL.DEVICE
    logger.info("Benchmarking %s on %s (%s)", args.config_file, cfg.DATASETS.TEST[0], device)

    peaks = OrderedDict()
    with PeakMemory(device) as peak:
        start = clock(device)
        model = RefSegTrainer.build_model(cfg)
        build_s = clock(device) - start
    peaks["model_build"] = peak.result
    with PeakMemory(device) as peak:
        memory = fill_memory(cfg, model)
    peaks["memory_fill"] = peak.result
    kept = [] if args.predictions else None
    with PeakMemory(device) as peak:
        inference = time_inference(cfg, model, args.num_images, args.warmup, kept=kept)
    peaks["inference"] = peak.result
    if args.predictions:
        print("predictions: {}".format(write_predictions(args.predictions, cfg.DATASETS.TEST[0],
                                                         kept)))
    report = {
        "config": args.config_file,
        "device": torch.cuda.get_device_name() if device.startswith("cuda") else "cpu",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "model_build_s": build_s,
        "memory_fill_s": memory["seconds"],
        "memory_references": memory["references"],
        "inference": inference,
    }
    if args.target_sizes:
        report["target_sizes"] = time_target_sizes(cfg, model, args)
    if args.sweep:
        with PeakMemory(device) as peak:
            report["sweep"] = sweep(cfg, model, args)
        peaks["sweep"] = peak.result
    report["peak_memory"] = peaks

    print(format_benchmark(report))
    path = os.path.join(args.output, "benchmark.json")
    with open(path, "w") as f:
        json.dump(report, f, indent=2)
    print("JSON: {}".format(path))
    return report


if __name__ == "__main__":
    main()
