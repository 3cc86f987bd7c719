"""
The rows a sweep figure is drawn from: one per (shot count, metric) with the mean and sample
standard deviation over seeds, as ``results.csv`` of ``tools/sweep.py`` holds them.

A row is ``{"shots": int, "metric": "task/key", "mean": float, "std": float, "n": int}``
(``std`` is NaN for a single seed). Rows come from the sweep's table of per-run metrics
(:func:`summary_rows`), from its ``results.csv`` (:func:`rows_from_csv`) or straight from the
run folders' ``metrics.json`` files (:func:`rows_from_run_dirs`), so the figure can be rebuilt
from any of them.
"""
import csv
import json
import logging
import math
import os
import re
from collections import OrderedDict

import numpy as np

logger = logging.getLogger(__name__)

RUN_DIR = re.compile(r"^(\d+)shot(?:_seed(\d+))?$")


def flatten_metrics(results):
    """{"bbox": {"AP": x}} -> {"bbox/AP": x} (numbers only); flat dicts are returned as they are."""
    flat = OrderedDict()
    for task, value in results.items():
        if isinstance(value, dict):
            for key, v in value.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    flat["{}/{}".format(task, key)] = float(v)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            flat[task] = float(value)
    return flat


def mean_std(values):
    """(mean, sample standard deviation with ddof 1 or NaN for one value, n)."""
    v = np.asarray(values, dtype=np.float64)
    std = float(np.std(v, ddof=1)) if len(v) > 1 else float("nan")
    return float(np.mean(v)), std, len(v)


def summary_rows(table, metrics=None):
    """
    Args:
        table (dict): {shots: {seed: metrics}}, metrics nested as metrics.json
            ({"bbox": {"AP": ..}}) or flat ({"bbox/AP": ..}); what ``tools/sweep.py`` collects.
        metrics (list[str] or None): the task/key metrics to keep (default: every metric
            without a per-class "-" in its key).
    Returns:
        list of rows, shots ascending, metrics in first-seen order.
    """
    flat = OrderedDict(
        (int(k), [flatten_metrics(m) for m in per_seed.values()]) for k, per_seed in table.items()
    )
    if metrics is None:
        seen = OrderedDict((m, None) for runs in flat.values() for r in runs for m in r)
        metrics = [m for m in seen if "-" not in m.split("/", 1)[-1]]
    rows = []
    for k in sorted(flat):
        for m in metrics:
            values = [r[m] for r in flat[k] if m in r]
            if values:
                mean, std, n = mean_std(values)
                rows.append({"shots": k, "metric": m, "mean": mean, "std": std, "n": n})
    return rows


def rows_from_csv(path):
    """The rows of a sweep's ``results.csv`` (columns shots, metric, n, mean, std, ...)."""
    rows = []
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            std = r.get("std", "")
            rows.append({
                "shots": int(r["shots"]), "metric": r["metric"], "mean": float(r["mean"]),
                "std": float(std) if std not in ("", None) else float("nan"),
                "n": int(r["n"]) if r.get("n") else 1,
            })
    return rows


def table_from_run_dirs(sweep_dir):
    """
    {shots: {seed: nested metrics}} of the finished runs under ``sweep_dir``: the folders named
    ``<K>shot_seed<S>`` or ``<K>shot`` (seed None) that hold a ``metrics.json``.
    """
    table = {}
    for name in sorted(os.listdir(sweep_dir)):
        match = RUN_DIR.match(name)
        path = os.path.join(sweep_dir, name, "metrics.json")
        if not match or not os.path.isfile(path):
            continue
        with open(path) as f:
            results = json.load(f)
        seed = int(match.group(2)) if match.group(2) is not None else None
        table.setdefault(int(match.group(1)), OrderedDict())[seed] = results
    return OrderedDict((k, table[k]) for k in sorted(table))


def rows_from_run_dirs(sweep_dir, metrics=None):
    """:func:`summary_rows` of :func:`table_from_run_dirs`."""
    table = table_from_run_dirs(sweep_dir)
    if not table:
        raise FileNotFoundError("No finished run (<K>shot[_seed<S>]/metrics.json) under {}".format(
            sweep_dir))
    return summary_rows(table, metrics)


def curves(rows):
    """{metric: (shots, means, stds)} as lists sorted by shots, metrics in first-seen order."""
    by_metric = OrderedDict()
    for r in rows:
        by_metric.setdefault(r["metric"], []).append(r)
    out = OrderedDict()
    for metric, rs in by_metric.items():
        rs = sorted(rs, key=lambda r: r["shots"])
        out[metric] = ([r["shots"] for r in rs], [r["mean"] for r in rs],
                       [r["std"] if not math.isnan(r["std"]) else 0.0 for r in rs])
    return out
