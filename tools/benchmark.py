#!/usr/bin/env python
"""
Speed benchmark of refseg_d2: per-stage time, images per second and peak memory for a config
on the first N images of its test dataset, as a table and as JSON. Works on CPU and GPU.

    python tools/benchmark.py --config-file configs/refseg_sam2l_dinov2l.yaml --num-images 20 \
        --register refs refs.json imgs/ --register test test.json imgs/ \
        DATASETS.REFERENCE '("refs",)' DATASETS.TEST '("test",)'

Without datasets in the config it benchmarks the synthetic demo data. ``--sweep K`` also
measures what the proposal cache buys a seed sweep: K runs (memory filling + inference) with
different reference subsets and the cache on, against one uncached run; it reports the ratio.
"""
import json
import logging
import os
import random
import resource
import time
from collections import OrderedDict, defaultdict

import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_instances
from detectron2.utils.logger import setup_logger
from tabulate import tabulate

from refseg_d2 import RefSegTargetMapper, RefSegTrainer, fill_memory
from refseg_d2.engine import build_cfg, register_datasets
from refseg_d2.engine.defaults import refseg_tool_parser
from refseg_d2.testing import make_demo_dataset

logger = logging.getLogger("refseg_d2.benchmark")


def parse_args(argv=None):
    p = refseg_tool_parser(__doc__)
    p.add_argument("--num-images", type=int, default=10, help="target images to time")
    p.add_argument("--warmup", type=int, default=1, help="untimed images first")
    p.add_argument("--sweep", type=int, default=0, help="also time a K-seed sweep with the cache")
    p.add_argument("--shots", type=int, default=1, help="references per class in sweep runs")
    p.add_argument("--output", default="output/benchmark", help="folder of the JSON and caches")
    return p.parse_args(argv)


def benchmark_cfg(args):
    register_datasets(args.register)
    cfg = build_cfg(args.config_file, args.opts, output_dir=args.output)
    if not cfg.DATASETS.TEST:
        data = make_demo_dataset(os.path.join(args.output, "data"))
        for name, split in (("bench_refs", data["refs"]), ("bench_targets", data["targets"])):
            if name not in DatasetCatalog.list():
                register_coco_instances(name, {}, split[0], split[1])
        cfg.DATASETS.REFERENCE, cfg.DATASETS.TEST = ("bench_refs",), ("bench_targets",)
    return cfg


def peak_memory():
    """Peak CPU RSS and peak CUDA memory allocated, in MiB."""
    out = {"cpu_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0}
    if torch.cuda.is_available():
        out["gpu_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def time_inference(cfg, model, num_images, warmup):
    """Run the model on the first images of DATASETS.TEST[0]; per-stage seconds per image."""
    mapper = RefSegTargetMapper(cfg)
    dicts = DatasetCatalog.get(cfg.DATASETS.TEST[0])[: warmup + num_images]
    with torch.no_grad():
        for d in dicts[:warmup]:
            model([mapper(d)])
        model.timer.reset()
        load = 0.0
        start = time.perf_counter()
        batch = cfg.MODEL.REFSEG.ACCEL.IMAGES_PER_BATCH
        timed = dicts[warmup:]
        for i in range(0, len(timed), batch):
            t = time.perf_counter()
            inputs = [mapper(d) for d in timed[i : i + batch]]
            load += time.perf_counter() - t
            model(inputs)
        wall = time.perf_counter() - start
    n = max(model.timer.num_images, 1)
    stages = OrderedDict([("image_loading", load / n)])
    stages.update(model.timer.per_image())
    return {"images": model.timer.num_images, "wall_s": wall,
            "images_per_s": model.timer.num_images / wall if wall > 0 else 0.0,
            "per_image_s": stages}


def subset_dataset(name, shots, seed):
    """Register NAME_bench_shot<k>_seed<s>: at most ``shots`` annotations per class, seeded."""
    new = "{}_bench_{}shot_seed{}".format(name, shots, seed)
    if new in DatasetCatalog.list():
        return new

    def load():
        dicts = DatasetCatalog.get(name)
        by_class = defaultdict(list)
        for i, d in enumerate(dicts):
            for j, a in enumerate(d.get("annotations", [])):
                if not a.get("iscrowd", 0):
                    by_class[a["category_id"]].append((i, j))
        rng = random.Random(seed)
        chosen = set()
        for c in sorted(by_class):
            chosen.update(rng.sample(by_class[c], min(shots, len(by_class[c]))))
        out = []
        for i, d in enumerate(dicts):
            anns = [a for j, a in enumerate(d.get("annotations", [])) if (i, j) in chosen]
            if anns:
                out.append(dict(d, annotations=anns))
        return out

    DatasetCatalog.register(new, load)
    meta = MetadataCatalog.get(name)
    DatasetCatalog.get(name)  # sets the category metadata of COCO-format datasets
    MetadataCatalog.get(new).set(
        thing_classes=meta.thing_classes,
        thing_dataset_id_to_contiguous_id=meta.get("thing_dataset_id_to_contiguous_id", None)
        or {i: i for i in range(len(meta.thing_classes))},
    )
    return new


def timed_run(cfg, model, references, num_images):
    """Fill the memory from ``references`` and run inference; returns the seconds taken."""
    start = time.perf_counter()
    fill_memory(cfg, model, [references])
    time_inference(cfg, model, num_images, warmup=0)
    return time.perf_counter() - start


def sweep(cfg, args):
    """
    One uncached run against K cached runs (the first fills the cache) with different
    reference subsets (seeds). A run = memory filling + inference; the model is built once
    per mode and not timed (a sweep reuses it).
    """
    ref = cfg.DATASETS.REFERENCE[0]
    base = cfg.clone()
    base.MODEL.REFSEG.CACHE.ENABLED = False
    single = timed_run(base, RefSegTrainer.build_model(base), subset_dataset(ref, args.shots, 0),
                       args.num_images)
    cached = cfg.clone()
    cached.MODEL.REFSEG.CACHE.ENABLED = True
    cached.MODEL.REFSEG.CACHE.DIR = os.path.join(args.output, "sweep_cache_{}".format(time.time_ns()))
    model = RefSegTrainer.build_model(cached)
    runs = []
    for seed in range(args.sweep):
        hits = model.cache.hits
        seconds = timed_run(cached, model, subset_dataset(ref, args.shots, seed), args.num_images)
        runs.append({"seed": seed, "seconds": seconds, "cache_hits": model.cache.hits - hits})
    total = sum(r["seconds"] for r in runs)
    return {"single_uncached_run_s": single, "runs": runs, "sweep_total_s": total,
            "sweep_over_single_run": total / single if single > 0 else float("nan")}


def main(argv=None):
    args = parse_args(argv)
    os.makedirs(args.output, exist_ok=True)
    setup_logger(name="refseg_d2")
    cfg = benchmark_cfg(args)
    device = cfg.MODEL.DEVICE
    logger.info("Benchmarking %s on %s (%s)", args.config_file, cfg.DATASETS.TEST[0], device)

    start = time.perf_counter()
    model = RefSegTrainer.build_model(cfg)
    build_s = time.perf_counter() - start
    memory = fill_memory(cfg, model)
    report = {
        "config": args.config_file,
        "device": torch.cuda.get_device_name() if device.startswith("cuda") else "cpu",
        "torch": torch.__version__,
        "model_build_s": build_s,
        "memory_fill_s": memory["seconds"],
        "memory_references": memory["references"],
        "inference": time_inference(cfg, model, args.num_images, args.warmup),
    }
    if args.sweep:
        report["sweep"] = sweep(cfg, args)
    report["peak_memory"] = peak_memory()

    rows = [[k, "{:.4f}".format(v)] for k, v in report["inference"]["per_image_s"].items()]
    rows.append(["total (per image)", "{:.4f}".format(sum(report["inference"]["per_image_s"].values()))])
    print(tabulate(rows, headers=["stage", "seconds / image"], tablefmt="pipe"))
    print("images/s: {:.3f}  ({} images)".format(
        report["inference"]["images_per_s"], report["inference"]["images"]))
    print("peak memory: " + ", ".join("{} {:.0f}".format(k, v) for k, v in report["peak_memory"].items()))
    if args.sweep:
        s = report["sweep"]
        print("sweep of {} seeds with the cache: {:.1f}s = {:.2f} x one uncached run ({:.1f}s)".format(
            args.sweep, s["sweep_total_s"], s["sweep_over_single_run"], s["single_uncached_run_s"]))
    path = os.path.join(args.output, "benchmark.json")
    with open(path, "w") as f:
        json.dump(report, f, indent=2)
    print("JSON: {}".format(path))
    return report


if __name__ == "__main__":
    main()
