#!/usr/bin/env python
"""
Shots x seeds sweep of a benchmark config, then a table of mean +- std per metric (as FsDet's
run_experiments.py and aggregate_seeds.py).

    python tools/sweep.py --config-file configs/benchmarks/coco_fsod.yaml \
        --shots 1 2 3 5 10 30 --seeds 42 13 27 36 88 33 69 55 77 99 \
        --output-dir output/sweeps/coco_fsod [--num-gpus 4] [KEY VALUE ...]

Each run is ``tools/train_net.py --eval-only`` in ``OUTPUT_DIR/<K>shot_seed<S>/`` (``<K>shot``
without seeds, e.g. CD-FSOD), with the shot count and seed substituted into the config's
DATASETS.REFERENCE names (``..._10shot_seed33`` -> ``..._<K>shot_seed<S>``); train_net registers
any seed of a benchmark's reference sets by its name. ``--register NAME JSON IMAGE_ROOT`` and
the positional config overrides are handed to every run, as train_net takes them.
Runs go one after another; a run whose ``metrics.json`` exists is skipped, so an
interrupted sweep resumes where it stopped when the same command is run again. What is reused:
the SAM 2 / DINOv2 proposals of the test images, cached once for all runs
(``OUTPUT_DIR/proposal_cache``, the proposal cache of the README; ``--no-proposal-cache`` turns it
off, it takes a few MB per image), and the sampled reference sets, written once
(``$REFSEG_D2_CACHE``).

Results: ``OUTPUT_DIR/results.md`` (mean +- sample standard deviation over seeds per shot count,
then every seed, per metric) and ``OUTPUT_DIR/results.csv`` (also n and the 95% confidence
interval 1.96 std / sqrt(n) that FsDet reports). ``--aggregate-only`` only rebuilds them.
"""
import csv
import json
import logging
import math
import os
import re
import subprocess
import sys
from collections import OrderedDict

import numpy as np

from refseg_d2.engine import build_cfg, refseg_argument_parser
from refseg_d2.engine.defaults import config_overrides
from refseg_d2.utils.files import atomic_write

TRAIN_NET = os.path.join(os.path.dirname(os.path.abspath(__file__)), "train_net.py")

logger = logging.getLogger("refseg_d2.sweep")

DEFAULT_METRICS = (
    "bbox/AP", "bbox/AP50", "segm/AP", "segm/AP50", "voc07_bbox/AP50", "sem_seg/mIoU",
)
_SHOT = re.compile(r"(?<=_)\d+shot(?=_|$)")
_SEED = re.compile(r"(?<=_)seed\d+(?=_|$)")


def parse_args(argv=None):
    p = refseg_argument_parser(description=__doc__)
    p.add_argument("--shots", type=int, nargs="+", required=True)
    p.add_argument("--seeds", type=int, nargs="*", default=[], help="none: names without seed")
    p.add_argument("--output-dir", required=True)
    p.add_argument("--no-proposal-cache", action="store_true")
    p.add_argument("--metrics", nargs="+", help="task/metric keys, or 'all' (default: main ones)")
    p.add_argument("--aggregate-only", action="store_true")
    p.add_argument("--train-net", default=TRAIN_NET)
    args = p.parse_args(argv)
    if not args.config_file:
        p.error("--config-file is required")
    return args


def reference_names(names, shots, seed):
    """``names`` with their ``<K>shot`` (and ``seed<S>`` unless seed is None) replaced."""
    out = []
    for name in names:
        if not _SHOT.search(name):
            raise ValueError("Reference dataset {!r} has no '_<K>shot' to sweep".format(name))
        new = _SHOT.sub("{}shot".format(shots), name, count=1)
        if seed is not None:
            if not _SEED.search(name):
                raise ValueError(
                    "Reference dataset {!r} has no '_seed<S>': sweep it without "
                    "--seeds".format(name)
                )
            new = _SEED.sub("seed{}".format(seed), new, count=1)
        out.append(new)
    return out


def run_name(shots, seed):
    return "{}shot".format(shots) if seed is None else "{}shot_seed{}".format(shots, seed)


def load_config(args):
    return build_cfg(args.config_file, args.opts)


def plan_runs(args, references):
    """[(shots, seed, run folder, reference names)] of the sweep."""
    runs = []
    for k in args.shots:
        for seed in args.seeds or [None]:
            names = reference_names(references, k, seed)
            runs.append((k, seed, os.path.join(args.output_dir, run_name(k, seed)), names))
    return runs


def check_manifest(args):
    """Record what the sweep runs; refuse to mix runs of another config or other overrides."""
    manifest = {
        "config_file": os.path.abspath(args.config_file),
        "opts": list(args.opts),
        "register": [list(r) for r in args.register],
        "proposal_cache": not args.no_proposal_cache,
    }
    path = os.path.join(args.output_dir, "sweep.json")
    if os.path.isfile(path):
        with open(path) as f:
            old = json.load(f)
        if old != manifest:
            raise ValueError(
                "{} holds a sweep of {}; this one is {}. Use another --output-dir.".format(
                    path, old, manifest
                )
            )
        return
    atomic_write(path, lambda f: json.dump(manifest, f, indent=2), mode="w")


def train_net_command(args, run_dir, names):
    cmd = [sys.executable, args.train_net, "--config-file", args.config_file, "--eval-only",
           "--num-gpus", str(args.num_gpus)]
    for entry in args.register:
        cmd += ["--register"] + list(entry)
    if args.num_gpus > 1:
        cmd += ["--dist-url", "auto"]
    opts = config_overrides(args.opts)
    cmd += opts + ["DATASETS.REFERENCE", repr(tuple(names)), "OUTPUT_DIR", run_dir]
    if not args.no_proposal_cache:
        cache = os.path.join(args.output_dir, "proposal_cache")
        cmd += ["MODEL.REFSEG.CACHE.ENABLED", "True", "MODEL.REFSEG.CACHE.DIR", cache]
    return cmd


def run_all(args, runs, runner=subprocess.call):
    """Run what is missing, in order; stop at the first failure (rerun to resume)."""
    for k, seed, run_dir, names in runs:
        if os.path.isfile(os.path.join(run_dir, "metrics.json")):
            logger.info("%s: done, skipped", run_dir)
            continue
        logger.info("%s: references %s", run_dir, names)
        rc = runner(train_net_command(args, run_dir, names))
        if rc != 0 or not os.path.isfile(os.path.join(run_dir, "metrics.json")):
            raise RuntimeError(
                "Run {} failed (exit status {}; its log: {}). Finished runs are kept: run the "
                "same command again to resume.".format(
                    run_dir, rc, os.path.join(run_dir, "log.txt")
                )
            )


def flatten(results):
    """{"bbox": {"AP": x}} -> {"bbox/AP": x} (numbers only)."""
    return OrderedDict(
        ("{}/{}".format(task, key), float(value))
        for task, res in results.items() if isinstance(res, dict)
        for key, value in res.items() if isinstance(value, (int, float))
    )


def collect(runs):
    """{shots: OrderedDict(seed: flat metrics)} of the finished runs."""
    table = OrderedDict()
    for k, seed, run_dir, _ in runs:
        path = os.path.join(run_dir, "metrics.json")
        if not os.path.isfile(path):
            logger.warning("%s has no metrics.json: left out of the table", run_dir)
            continue
        with open(path) as f:
            table.setdefault(k, OrderedDict())[seed] = flatten(json.load(f))
    return table


def select_metrics(table, wanted):
    present = [m for per_seed in table.values() for flat in per_seed.values() for m in flat]
    present = list(OrderedDict.fromkeys(present))
    if wanted == ["all"]:
        return [m for m in present if "-" not in m.split("/", 1)[-1]]
    if wanted:
        return wanted
    return [m for m in DEFAULT_METRICS if m in present]


def statistics(values):
    """mean, sample std (ddof 1; NaN for one value), n, 95% CI half-width (1.96 std / sqrt n)."""
    v = np.asarray(values, dtype=np.float64)
    std = float(np.std(v, ddof=1)) if len(v) > 1 else float("nan")
    return float(np.mean(v)), std, len(v), 1.96 * std / math.sqrt(len(v))


def _cell(mean, std):
    return "{:.1f}".format(mean) if math.isnan(std) else "{:.1f} ± {:.1f}".format(mean, std)


def write_tables(output_dir, config_file, table, metrics):
    seeds = list(OrderedDict.fromkeys(s for per_seed in table.values() for s in per_seed))
    csv_rows, summary = [], []
    for k, per_seed in table.items():
        row = ["{}".format(k), str(len(per_seed))]
        for m in metrics:
            values = [flat[m] for flat in per_seed.values() if m in flat]
            if not values:
                row.append("-")
                continue
            mean, std, n, ci = statistics(values)
            row.append(_cell(mean, std))
            per_seed_values = [per_seed.get(s, {}).get(m, "") for s in seeds]
            csv_rows.append([k, m, n, mean, std, ci] + per_seed_values)
        summary.append(row)
    lines = [
        "# Sweep of {}".format(config_file), "",
        "Mean ± sample standard deviation over seeds (percent).", "",
        "| shots | seeds | " + " | ".join(metrics) + " |",
        "|---" * (len(metrics) + 2) + "|",
    ] + ["| " + " | ".join(r) + " |" for r in summary]
    for m in metrics:
        lines += ["", "## {} per seed".format(m), "",
                  "| shots | " + " | ".join(str(s) for s in seeds) + " | mean ± std |",
                  "|---" * (len(seeds) + 2) + "|"]
        for k, per_seed in table.items():
            values = [per_seed[s][m] for s in seeds if s in per_seed and m in per_seed[s]]
            cells = ["{:.1f}".format(per_seed[s][m]) if s in per_seed and m in per_seed[s] else "-"
                     for s in seeds]
            total = _cell(*statistics(values)[:2]) if values else "-"
            lines.append("| {} | {} | {} |".format(k, " | ".join(cells), total))
    atomic_write(os.path.join(output_dir, "results.md"),
                 lambda f: f.write("\n".join(lines) + "\n"), mode="w")

    def write_csv(f):
        writer = csv.writer(f)
        header = ["shots", "metric", "n", "mean", "std", "ci95"]
        writer.writerow(header + ["seed_{}".format(s) for s in seeds])
        writer.writerows(csv_rows)

    atomic_write(os.path.join(output_dir, "results.csv"), write_csv, mode="w")
    return "\n".join(lines)


def main(argv=None, runner=subprocess.call):
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s %(name)s] %(message)s")
    cfg = load_config(args)
    runs = plan_runs(args, list(cfg.DATASETS.REFERENCE))
    check_manifest(args)
    if not args.aggregate_only:
        run_all(args, runs, runner)
    table = collect(runs)
    if not table:
        raise RuntimeError("No finished run under {}".format(args.output_dir))
    metrics = select_metrics(table, args.metrics)
    text = write_tables(args.output_dir, args.config_file, table, metrics)
    print(text)
    return table


if __name__ == "__main__":
    main()  # pragma: no cover
