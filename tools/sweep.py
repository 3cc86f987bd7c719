#!/usr/bin/env python
"""
A sweep of reference sets (the shots x seeds of a benchmark config, and/or explicit sets) in one
pass over the test images, then a table of mean +- std per metric (as FsDet's
run_experiments.py and aggregate_seeds.py).

    python tools/sweep.py --config-file configs/benchmarks/coco_fsod.yaml \
        --shots 1 2 3 5 10 30 --seeds 42 13 27 36 88 33 69 55 77 99 \
        --output-dir output/sweeps/coco_fsod [--num-gpus 4] [-- KEY VALUE ...]
    python tools/sweep.py --config-file CONFIG --output-dir OUT --references refs_a refs_b \
        --register refs_a a.json imgs/ --register refs_b b.json imgs/ -- DATASETS.TEST '("test",)'

Runs: ``<K>shot_seed<S>`` (``<K>shot`` without seeds, e.g. CD-FSOD) with the shot count and
seed substituted into the config's DATASETS.REFERENCE names (``..._10shot_seed33`` ->
``..._<K>shot_seed<S>``; any seed of a benchmark's reference sets is registered by its name),
and one run per ``--references NAME`` (a registered dataset, the run named after it).
``--register NAME JSON IMAGE_ROOT`` and the positional config overrides are taken as train_net
takes them (overrides after ``--`` when they follow a list option).

All runs are evaluated together (``refseg_d2.engine.sweep``): their memories are filled first
(a reference image shared by several sets is encoded once), then every test image's SAM 2 /
DINOv2 proposals are computed once and matched against each run's memory. A run writes what
``tools/train_net.py --eval-only`` writes, in ``OUTPUT_DIR/<run>/``: its memory, config.yaml,
``inference/<test>/`` and, atomically once all its results are in, ``metrics.json``. A run with a
``metrics.json`` is finished and is not redone, so the same command resumes an interrupted (even
SIGKILLed) sweep. ``--runs-per-pass N`` bounds the host memory that the runs' predictions take
until they are evaluated; each further pass computes the proposals again. The log ends with the
wall time of each phase and the cost of the sweep relative to one run.

Each finished run also gets ``<run>/report.html`` (as train_net writes it; its stage times are the
sweep's: the proposals once, the matching of every run); ``--no-report`` skips it.

Results: ``OUTPUT_DIR/results.md`` (mean +- sample standard deviation over seeds per shot count,
then every seed, per metric), ``OUTPUT_DIR/results.csv`` (also n and the 95% confidence
interval 1.96 std / sqrt(n) that FsDet reports) and ``OUTPUT_DIR/results.png`` / ``.svg`` (mean
+- std against the shot count, next to the published baselines of the benchmark,
``refseg_d2/reporting/baselines.json``). ``--aggregate-only`` only rebuilds them.
"""
import json
import logging
import os
import re
from collections import OrderedDict

from detectron2.engine import launch
from detectron2.utils import comm

from refseg_d2 import RefSegTrainer
from refseg_d2.data.datasets import unregistered
from refseg_d2.engine import SweepRun, refseg_argument_parser, run_sweep, setup
from refseg_d2.engine.defaults import tool_setup
from refseg_d2.reporting import (
    benchmark_for, collect_runs, select_metrics, summary_rows, try_write_run_report,
    write_sweep_figures, write_tables,
)
from refseg_d2.utils.files import atomic_write

logger = logging.getLogger("refseg_d2.sweep")

_SHOT = re.compile(r"(?<=_)\d+shot(?=_|$)")
_SEED = re.compile(r"(?<=_)seed\d+(?=_|$)")


def get_parser():
    p = refseg_argument_parser(description=__doc__)
    p.add_argument("--shots", type=int, nargs="+", default=[],
                   help="shot counts substituted into DATASETS.REFERENCE")
    p.add_argument("--seeds", type=int, nargs="*", default=[], help="none: names without seed")
    p.add_argument("--references", nargs="+", default=[], metavar="NAME",
                   help="explicit reference sets (registered datasets), one run each")
    p.add_argument("--output-dir", required=True)
    p.add_argument("--runs-per-pass", type=int, default=0,
                   help="runs evaluated in one pass over the test images (default 0: all)")
    p.add_argument("--metrics", nargs="+", help="task/metric keys, or 'all' (default: main ones)")
    p.add_argument("--aggregate-only", action="store_true")
    p.add_argument("--no-report", action="store_true", help="no report.html per run")
    return p


def parse_args(argv=None):
    p = get_parser()
    args = p.parse_args(argv)
    if not args.config_file:
        p.error("--config-file is required")
    if not args.shots and not args.references:
        p.error("name the runs: --shots (and --seeds) and/or --references")
    if args.seeds and not args.shots:
        p.error("--seeds needs --shots")
    if args.runs_per_pass < 0:
        p.error("--runs-per-pass must be >= 0")
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
    """The sweep's config, its ``--register`` datasets registered."""
    return tool_setup(args)


def plan_runs(args, references):
    """
    [(shots, seed, run folder, reference names)] of the sweep: shots x seeds, then one per
    ``--references`` set (shots and seed None).
    """
    runs = []
    for k in args.shots:
        for seed in args.seeds or [None]:
            names = reference_names(references, k, seed)
            runs.append((k, seed, os.path.join(args.output_dir, run_name(k, seed)), names))
    for name in args.references:
        runs.append((None, None, os.path.join(args.output_dir, name), [name]))
    folders = [os.path.basename(r[2]) for r in runs]
    repeated = sorted({f for f in folders if folders.count(f) > 1})
    if repeated:
        raise ValueError("Runs named twice in the sweep: {}".format(repeated))
    return runs


def check_manifest(args):
    """Record what the sweep runs; refuse to mix runs of another config or other overrides."""
    manifest = {
        "config_file": os.path.abspath(args.config_file),
        "opts": list(args.opts),
        "register": [list(r) for r in args.register],
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


def check_datasets(cfg, runs):
    """
    Raise before any model is built when a reference or test dataset of the sweep is not
    registered; the error names each unknown dataset with the option that named it.
    """
    named = OrderedDict()
    shots_flag = "--shots/--seeds (substituted into DATASETS.REFERENCE {})".format(
        list(cfg.DATASETS.REFERENCE))
    for shots, _, _, names in runs:
        for name in names:
            named.setdefault(name, "--references" if shots is None else shots_flag)
    for name in cfg.DATASETS.TEST:
        named.setdefault(name, "DATASETS.TEST")
    by_flag = OrderedDict()
    for name in unregistered(list(named)):
        by_flag.setdefault(named[name], []).append(name)
    if by_flag:
        raise ValueError("Datasets not registered (register one with --register NAME JSON "
                         "IMAGE_ROOT): {}".format("; ".join(
                             "{}: {}".format(flag, ", ".join(repr(n) for n in names))
                             for flag, names in by_flag.items())))


def run_config(cfg, run):
    """The config train_net would run for this run alone."""
    run_cfg = cfg.clone()
    run_cfg.defrost()
    run_cfg.DATASETS.REFERENCE = tuple(run.references)
    run_cfg.OUTPUT_DIR = run.output_dir
    return run_cfg


def write_run_config(cfg, run):
    """<run>/config.yaml: the config train_net would run for this run alone."""
    run_cfg = run_config(cfg, run)
    atomic_write(os.path.join(run.output_dir, "config.yaml"), lambda f: f.write(run_cfg.dump()),
                 mode="w")


def sweep_worker(args, runs):
    """One process of the sweep (under ``launch``): build the model once, evaluate every run."""
    cfg = setup(args, output_dir=args.output_dir)
    if cfg.MODEL.WEIGHTS:
        raise ValueError(
            "MODEL.WEIGHTS is {!r}: a sweep fills each run's memory from its references, so a "
            "loaded memory would be ignored. Leave MODEL.WEIGHTS empty.".format(cfg.MODEL.WEIGHTS)
        )
    model = RefSegTrainer.build_model(cfg)
    sweep_runs = [SweepRun(os.path.basename(d), tuple(names), d) for _, _, d, names in runs]
    if comm.is_main_process():
        for run in sweep_runs:
            if not os.path.isfile(run.metrics_file):
                write_run_config(cfg, run)

    def write_report(run, results, memory):
        # Stage times are the sweep's so far: proposals once, the matching of every run.
        try_write_run_report(run_config(cfg, run), model, results, output_dir=run.output_dir,
                             memory=memory, timer=model.timer)

    return run_sweep(cfg, model, sweep_runs, args.runs_per_pass,
                     on_finished=None if args.no_report else write_report)


def main(argv=None):
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s %(name)s] %(message)s")
    cfg = load_config(args)
    runs = plan_runs(args, list(cfg.DATASETS.REFERENCE))
    if not args.aggregate_only:
        check_datasets(cfg, runs)
    check_manifest(args)
    if not args.aggregate_only:
        launch(
            sweep_worker,
            args.num_gpus,
            num_machines=args.num_machines,
            machine_rank=args.machine_rank,
            dist_url=args.dist_url,
            args=(args, runs),
        )
    table, sets = collect_runs([(k, seed, run_dir) for k, seed, run_dir, _ in runs])
    if not table and not sets:
        raise RuntimeError("No finished run under {}".format(args.output_dir))
    metrics = select_metrics(OrderedDict(list(table.items()) + list(sets.items())), args.metrics)
    text = write_tables(args.output_dir, args.config_file, table, metrics, sets)
    if table:
        try:
            write_sweep_figures(summary_rows(table, metrics), args.output_dir, benchmark_for(cfg))
        except Exception as e:  # the tables are written; the figure is an extra
            logger.warning("results.png / results.svg not written (%s: %s)", type(e).__name__, e)
    print(text)
    return table, sets


if __name__ == "__main__":
    main()  # pragma: no cover
