"""
The tables of a sweep: the finished runs' metrics collected (:func:`collect_runs`), the metrics
shown (:func:`select_metrics`), then ``results.md`` (mean +- sample standard deviation over
seeds per shot count, the explicit reference sets, then every seed per metric) and
``results.csv`` (per shot count and metric: n, mean, std, the 95% confidence interval
1.96 std / sqrt(n) and every seed).
"""
import csv
import json
import logging
import math
import os
from collections import OrderedDict

from ..utils.files import atomic_write
from .sweep_rows import flatten_metrics, mean_std

logger = logging.getLogger(__name__)

DEFAULT_METRICS = (
    "bbox/AP", "bbox/AP50", "segm/AP", "segm/AP50", "voc07_bbox/AP50", "sem_seg/mIoU",
)


def collect_runs(runs):
    """
    Args:
        runs (list): (shots, seed, run folder) per run; shots None for an explicit set.
    Returns:
        {shots: OrderedDict(seed: flat metrics)} of the finished shots x seeds runs, and
        {set name: OrderedDict(None: flat metrics)} of the finished explicit sets; a run
        without a metrics.json is left out with a warning.
    """
    table, sets = OrderedDict(), OrderedDict()
    for k, seed, run_dir in runs:
        path = os.path.join(run_dir, "metrics.json")
        if not os.path.isfile(path):
            logger.warning("%s has no metrics.json: left out of the table", run_dir)
            continue
        with open(path) as f:
            flat = flatten_metrics(json.load(f))
        if k is None:
            sets[os.path.basename(run_dir)] = OrderedDict([(None, flat)])
        else:
            table.setdefault(k, OrderedDict())[seed] = flat
    return table, sets


def select_metrics(table, wanted):
    """
    The metrics of the tables: ``wanted`` as given, every metric present without a per-class
    "-" for ``["all"]``, or (``wanted`` empty) those of :data:`DEFAULT_METRICS` present.
    """
    present = [m for per_seed in table.values() for flat in per_seed.values() for m in flat]
    present = list(OrderedDict.fromkeys(present))
    if wanted == ["all"]:
        return [m for m in present if "-" not in m.split("/", 1)[-1]]
    if wanted:
        return wanted
    return [m for m in DEFAULT_METRICS if m in present]


def statistics(values):
    """mean, sample std (ddof 1; NaN for one value), n, 95% CI half-width (1.96 std / sqrt n)."""
    mean, std, n = mean_std(values)
    return mean, std, n, 1.96 * std / math.sqrt(n)


def _cell(mean, std):
    return "{:.1f}".format(mean) if math.isnan(std) else "{:.1f} ± {:.1f}".format(mean, std)


def _summary(table, metrics, seeds):
    """The markdown rows of the shots x seeds table and the rows of results.csv."""
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
    return summary, csv_rows


def _per_seed_lines(table, metrics, seeds):
    lines = []
    for m in metrics if table else []:
        lines += ["", "## {} per seed".format(m), "",
                  "| shots | " + " | ".join(str(s) for s in seeds) + " | mean ± std |",
                  "|---" * (len(seeds) + 2) + "|"]
        for k, per_seed in table.items():
            values = [per_seed[s][m] for s in seeds if s in per_seed and m in per_seed[s]]
            cells = ["{:.1f}".format(per_seed[s][m]) if s in per_seed and m in per_seed[s] else "-"
                     for s in seeds]
            total = _cell(*statistics(values)[:2]) if values else "-"
            lines.append("| {} | {} | {} |".format(k, " | ".join(cells), total))
    return lines


def write_tables(output_dir, config_file, table, metrics, sets=None):
    """
    Write ``output_dir/results.md`` and ``results.csv``; returns the markdown text.

    Args:
        table (dict): {shots: {seed: flat metrics}} of the shots x seeds runs.
        metrics (list[str]): the task/key metrics of the tables.
        sets (dict or None): {set name: {None: flat metrics}} of the explicit reference sets.
    """
    seeds = list(OrderedDict.fromkeys(s for per_seed in table.values() for s in per_seed))
    summary, csv_rows = _summary(table, metrics, seeds)
    lines = ["# Sweep of {}".format(config_file)]
    if table:
        lines += [
            "", "Mean ± sample standard deviation over seeds (percent).", "",
            "| shots | seeds | " + " | ".join(metrics) + " |",
            "|---" * (len(metrics) + 2) + "|",
        ] + ["| " + " | ".join(r) + " |" for r in summary]
    if sets:
        lines += ["", "## Reference sets", "", "| reference set | " + " | ".join(metrics) + " |",
                  "|---" * (len(metrics) + 1) + "|"]
        for name, runs in sets.items():
            cells = ["{:.1f}".format(runs[None][m]) if m in runs[None] else "-" for m in metrics]
            lines.append("| {} | {} |".format(name, " | ".join(cells)))
    lines += _per_seed_lines(table, metrics, seeds)
    atomic_write(os.path.join(output_dir, "results.md"),
                 lambda f: f.write("\n".join(lines) + "\n"), mode="w", what="the sweep table")

    def write_csv(f):
        writer = csv.writer(f)
        header = ["shots", "metric", "n", "mean", "std", "ci95"]
        writer.writerow(header + ["seed_{}".format(s) for s in seeds])
        writer.writerows(csv_rows)

    atomic_write(os.path.join(output_dir, "results.csv"), write_csv, mode="w",
                 what="the sweep table")
    return "\n".join(lines)
