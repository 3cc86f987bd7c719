"""
The figure of a seed sweep, ``results.png`` and ``results.svg``: per metric, the mean +- sample
standard deviation over seeds against the shot count, with the published baselines of the
benchmark beside it (``baselines.json`` in this folder, which cites the source of every number).

    from refseg_d2.reporting import benchmark_for, summary_rows, write_sweep_figures
    write_sweep_figures(summary_rows(table, metrics), output_dir, benchmark_for(cfg))

How baselines are drawn: verified series as solid lines with filled markers (error bars where
the source gives a standard deviation); a series marked ``"verified": false`` that holds numbers
as dashed lines with hollow markers, "(not verified)" in its label; entries without numbers
(the "not verified" rows of docs/BENCHMARKS.md) are not drawn and are named under the figure.
"""
import json
import logging
import math
import os

from ..utils.files import atomic_write
from .sweep_rows import curves

logger = logging.getLogger(__name__)

BASELINES_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "baselines.json")
OURS_LABEL = "refseg_d2 (this sweep)"
OURS_COLOR = "black"
MARKERS = ("s", "^", "D", "v", "P", "X", "<", ">")


def load_baselines(path=None):
    """The parsed baselines file (default: the one shipped in this folder)."""
    with open(path or BASELINES_FILE) as f:
        return json.load(f)


def benchmark_for(cfg_or_test_datasets, baselines=None):
    """
    The baselines key of a run (e.g. "coco_fsod"): the benchmark whose ``test_datasets`` hold
    one of the run's test datasets; None when none does.

    Args:
        cfg_or_test_datasets: a config (its DATASETS.TEST is used) or a list of dataset names.
    """
    names = cfg_or_test_datasets
    if hasattr(names, "DATASETS"):
        names = names.DATASETS.TEST
    baselines = baselines or load_baselines()
    for key, bench in baselines["benchmarks"].items():
        if set(names) & set(bench.get("test_datasets", [])):
            return key
    return None


def _benchmark(benchmark, baselines):
    if benchmark is None:
        return {"title": "", "baselines": []}
    if benchmark not in baselines["benchmarks"]:
        raise KeyError("No benchmark {!r} in the baselines file (it has {})".format(
            benchmark, sorted(baselines["benchmarks"])))
    return baselines["benchmarks"][benchmark]


def _draw_ours(ax, shots, means, stds, n_label):
    ax.fill_between(shots, [m - s for m, s in zip(means, stds)],
                    [m + s for m, s in zip(means, stds)], color=OURS_COLOR, alpha=0.12, lw=0)
    ax.errorbar(shots, means, yerr=stds, color=OURS_COLOR, marker="o", lw=2, capsize=3,
                label="{} {}".format(OURS_LABEL, n_label), zorder=5)


def _draw_baseline(ax, entry, points, style):
    xs = [p["shots"] for p in points]
    ys = [p["value"] for p in points]
    errs = [p.get("std", 0.0) for p in points]
    verified = entry.get("verified", False)
    label = entry["name"] + ("" if verified else " (not verified)")
    ax.errorbar(xs, ys, yerr=errs if any(errs) else None, label=label, capsize=2,
                color=style["color"], marker=style["marker"], ms=6, lw=1.2,
                ls="-" if verified else "--", mfc=style["color"] if verified else "none")


def _n_label(rows, metric):
    ns = sorted({r.get("n", 1) for r in rows if r["metric"] == metric})
    text = "/".join(str(n) for n in ns)
    return "(mean ± std, {} seed{})".format(text, "" if ns == [1] else "s")


def build_sweep_figure(rows, benchmark=None, baselines=None, title=None):
    """
    The sweep figure as a matplotlib ``Figure`` (no pyplot state is touched).

    Args:
        rows (list[dict]): see :mod:`refseg_d2.reporting.sweep_rows`.
        benchmark (str or None): a key of the baselines file, or None (no baselines).
        baselines (dict or None): the parsed baselines file (default: the shipped one).
    Returns:
        (Figure, list of the names of the baselines not drawn)
    """
    from matplotlib.figure import Figure
    from matplotlib.ticker import FixedLocator, NullLocator

    if not rows:
        raise ValueError("No sweep rows to plot")
    bench = _benchmark(benchmark, baselines or load_baselines())
    series = curves(rows)
    columns = min(3, len(series))
    lines = int(math.ceil(len(series) / columns))
    fig = Figure(figsize=(5.2 * columns, 4.0 * lines + 0.9), layout="constrained")
    axes = fig.subplots(lines, columns, squeeze=False).ravel()
    colors = ["C{}".format(i) for i in range(10)]
    not_drawn = [e["name"] for e in bench["baselines"]
                 if not any(e.get("series", {}).values())]
    for ax, (metric, (shots, means, stds)) in zip(axes, series.items()):
        all_shots = set(shots)
        for i, entry in enumerate(bench["baselines"]):
            points = entry.get("series", {}).get(metric)
            if not points:
                continue
            style = {"color": colors[(i + 1) % len(colors)], "marker": MARKERS[i % len(MARKERS)]}
            _draw_baseline(ax, entry, points, style)
            all_shots |= {p["shots"] for p in points}
        _draw_ours(ax, shots, means, stds, _n_label(rows, metric))
        ax.set_xscale("log")
        ticks = sorted(all_shots)
        ax.xaxis.set_major_locator(FixedLocator(ticks))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xticklabels([str(t) for t in ticks])
        ax.set_xlabel("shots per class")
        ax.set_ylabel(metric + " (%)")
        ax.set_title(metric)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    for ax in axes[len(series):]:
        ax.set_visible(False)
    fig.suptitle(title or bench.get("title") or "Seed sweep")
    notes = ["Baselines and their sources: refseg_d2/reporting/baselines.json; fine-tuned methods "
             "use their own protocols (see the file), not refseg_d2's test images."]
    if not_drawn:
        notes.append("Not drawn (no verified number): " + ", ".join(not_drawn) + ".")
    fig.supxlabel("\n".join(notes), fontsize=7)
    return fig, not_drawn


def write_sweep_figures(rows, output_dir, benchmark=None, baselines=None, title=None):
    """
    Write ``output_dir/results.png`` and ``output_dir/results.svg`` (atomically).

    Args:
        rows (list[dict]): mean / std per (shots, metric): :func:`summary_rows` of the sweep's
            table, :func:`rows_from_csv` of its results.csv or :func:`rows_from_run_dirs` of
            its folder.
        benchmark (str or None): baselines key, e.g. from :func:`benchmark_for` (None: no
            baselines).
    Returns:
        dict {"png": path, "svg": path}
    """
    from matplotlib import rc_context

    with rc_context({"svg.hashsalt": "refseg_d2"}):
        fig, not_drawn = build_sweep_figure(rows, benchmark, baselines, title)
        paths = {}
        for fmt in ("png", "svg"):
            path = os.path.join(output_dir, "results." + fmt)
            metadata = {"Date": None} if fmt == "svg" else None
            atomic_write(path, lambda f: fig.savefig(f, format=fmt, dpi=120, metadata=metadata))
            paths[fmt] = path
    logger.info("Sweep figures: %s, %s%s", paths["png"], paths["svg"],
                " (not drawn, no verified number: {})".format(", ".join(not_drawn))
                if not_drawn else "")
    return paths
