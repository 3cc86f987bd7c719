"""The sweep figure: mean +- std per shot count, the baselines beside it, rebuilt from files."""
import json
import math
import os
import re
import xml.etree.ElementTree as ET

import pytest
from common import REPO
from PIL import Image

from refseg_d2.reporting import (
    benchmark_for,
    build_sweep_figure,
    load_baselines,
    rows_from_csv,
    rows_from_run_dirs,
    summary_rows,
    write_sweep_figures,
)
from refseg_d2.reporting.sweep_plot import OURS_LABEL

# shots -> seed -> metrics.json; bbox/AP: 1 shot 10, 14; 5 shots 20, 21, 25
TABLE = {
    1: {42: {"bbox": {"AP": 10.0, "AP-cat": 3.0}, "segm": {"AP": 8.0}},
        13: {"bbox": {"AP": 14.0, "AP-cat": 5.0}, "segm": {"AP": 9.0}}},
    5: {42: {"bbox": {"AP": 20.0}, "segm": {"AP": 18.0}},
        13: {"bbox": {"AP": 21.0}, "segm": {"AP": 18.0}},
        27: {"bbox": {"AP": 25.0}, "segm": {"AP": 21.0}}},
}
# by hand: mean 12, sample std sqrt((4 + 4) / 1); mean 22, sqrt((4 + 1 + 9) / 2)
BBOX = [(1, 12.0, math.sqrt(8.0), 2), (5, 22.0, math.sqrt(7.0), 3)]


def test_rows_are_the_mean_and_sample_std_over_seeds_per_shot_count():
    rows = summary_rows(TABLE)
    assert {r["metric"] for r in rows} == {"bbox/AP", "segm/AP"}   # per-class keys left out
    got = [(r["shots"], r["mean"], r["std"], r["n"]) for r in rows if r["metric"] == "bbox/AP"]
    assert got == [pytest.approx(b) for b in BBOX]
    one_seed = summary_rows({10: {33: {"bbox": {"AP": 30.0}}}})
    assert one_seed[0]["mean"] == 30.0 and math.isnan(one_seed[0]["std"])


def _axis(fig, metric):
    return [ax for ax in fig.axes if ax.get_visible() and ax.get_title() == metric][0]


def _errorbar(ax, label_start):
    """(x, y, [(low, high)]) of the errorbar whose label starts with ``label_start``."""
    container = [c for c in ax.containers if c.get_label().startswith(label_start)][0]
    line, _, bars = container
    spans = [(seg[0][1], seg[1][1]) for seg in bars[0].get_segments()] if bars else []
    return list(line.get_xdata()), list(line.get_ydata()), spans


def test_the_figure_plots_these_means_and_stds_beside_the_published_baselines():
    fig, not_drawn = build_sweep_figure(summary_rows(TABLE), "coco_fsod")
    ax = _axis(fig, "bbox/AP")
    x, y, spans = _errorbar(ax, OURS_LABEL)
    assert x == [1, 5] and y == pytest.approx([12.0, 22.0])
    assert spans == [pytest.approx((m - s, m + s)) for _, m, s, _ in BBOX]
    x, y, _ = _errorbar(ax, "TFA w/ cos")
    assert (x, y) == ([10, 30], [10.0, 13.7])
    x, y, spans = _errorbar(ax, "No Time to Train (authors), 10 seeds")
    assert x == [1, 2, 3, 5, 10, 30] and y[0] == 24.5 and spans[0] == pytest.approx((23.0, 26.0))
    segm = [c.get_label() for c in _axis(fig, "segm/AP").containers]
    assert not any(label.startswith(("TFA", "DeFRCN")) for label in segm)   # bbox-only numbers
    labels = [c.get_label() for a in fig.axes for c in a.containers]
    assert not_drawn == ["DE-ViT", "FSOD-VFM"]
    assert not any(label.startswith(("DE-ViT", "FSOD-VFM")) for label in labels)
    assert "Not drawn (no verified number): DE-ViT, FSOD-VFM." in fig.get_supxlabel()


def test_unverified_numbers_are_drawn_dashed_and_hollow_with_a_label_saying_so():
    baselines = {"benchmarks": {"b": {"title": "t", "baselines": [
        {"name": "X", "verified": False, "source": "s",
         "series": {"bbox/AP": [{"shots": 1, "value": 5.0}]}}]}}}
    fig, _ = build_sweep_figure(summary_rows(TABLE), "b", baselines)
    container = [c for c in _axis(fig, "bbox/AP").containers if c.get_label().startswith("X")][0]
    assert container.get_label() == "X (not verified)"
    assert container[0].get_linestyle() == "--" and container[0].get_markerfacecolor() == "none"


def test_the_figures_are_rebuilt_from_the_run_folders_or_results_csv(tmp_path):
    for shots, per_seed in TABLE.items():
        for seed, metrics in per_seed.items():
            run = tmp_path / "{}shot_seed{}".format(shots, seed)
            run.mkdir()
            (run / "metrics.json").write_text(json.dumps(metrics))
    (tmp_path / "10shot_seed1").mkdir()             # unfinished run: no metrics.json
    rows = rows_from_run_dirs(str(tmp_path))
    assert rows == summary_rows(TABLE)
    paths = write_sweep_figures(rows, str(tmp_path), benchmark_for(["coco_fsod_val_novel"]))
    with Image.open(paths["png"]) as im:
        assert im.format == "PNG" and im.width > 500
    root = ET.parse(paths["svg"]).getroot()
    assert root.tag.endswith("svg")
    assert "TFA w/ cos" in open(paths["svg"]).read()
    csv_path = tmp_path / "results.csv"        # tools/sweep.py's layout
    lines = ["shots,metric,n,mean,std,ci95,seed_42,seed_13,seed_27"]
    lines += ["{},{},{},{!r},{},0,,,".format(r["shots"], r["metric"], r["n"], r["mean"],
                                              "" if math.isnan(r["std"]) else repr(r["std"]))
              for r in rows]
    csv_path.write_text("\n".join(lines) + "\n")
    assert rows_from_csv(str(csv_path)) == rows
    with pytest.raises(FileNotFoundError, match="No finished run"):
        rows_from_run_dirs(str(tmp_path / "10shot_seed1"))


def test_the_benchmark_of_a_run_comes_from_its_test_datasets():
    assert benchmark_for(["coco_fsod_val_novel"]) == "coco_fsod"
    assert benchmark_for(["coco_gfsod_val_all"]) == "coco_gfsod"
    assert benchmark_for(["my_test"]) is None
    fig, not_drawn = build_sweep_figure(summary_rows(TABLE), None)
    assert not_drawn == [] and all(len(a.containers) <= 1 for a in fig.axes)


# The published numbers and the seed ablation live in docs/BENCHMARKS.md, the paper's numbers in
# the README's results table.
BENCHMARKS_DOC = os.path.join(REPO, "docs", "BENCHMARKS.md")


def _readme_rows():
    """{(first cell, second cell): [cells]} of the tables of docs/BENCHMARKS.md."""
    rows = {}
    for line in open(BENCHMARKS_DOC):
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if len(cells) >= 2:
                rows[(cells[0], cells[1])] = cells
    return rows


# (benchmark, baseline) ->
#     (docs/BENCHMARKS.md row (method, protocol), position in "a / b / c" cells, metrics)
README_ROWS = {
    ("coco_fsod", "TFA w/ cos"): (("TFA w/ cos", "COCO FSOD nAP"), 0, ["bbox/AP"]),
    ("coco_fsod", "DeFRCN (paper)"): (("DeFRCN (paper)", "COCO FSOD nAP"), 0, ["bbox/AP"]),
    ("coco_fsod", "DeFRCN (repo)"): (("DeFRCN (repo)", "COCO FSOD nAP"), 0, ["bbox/AP"]),
    ("coco_gfsod", "TFA w/ cos, seed 0"): (("TFA w/ cos, seed 0", "gFSOD AP / bAP / nAP"), None,
                                           ["bbox/AP", "bbox/bAP", "bbox/nAP"]),
    ("coco_gfsod", "TFA w/ cos, 10 seeds"): (("TFA w/ cos, 10 seeds", "gFSOD AP / bAP / nAP"),
                                             None, ["bbox/AP", "bbox/bAP", "bbox/nAP"]),
    ("coco_gfsod", "DeFRCN (paper)"): (("DeFRCN (paper / repo)", "gFSOD nAP"), 0, ["bbox/nAP"]),
    ("coco_gfsod", "DeFRCN (repo)"): (("DeFRCN (paper / repo)", "gFSOD nAP"), 1, ["bbox/nAP"]),
}


def test_every_baseline_number_is_the_readmes_and_cites_its_source():
    readme = open(os.path.join(REPO, "README.md")).read()
    benchmarks = open(BENCHMARKS_DOC).read()
    rows = _readme_rows()
    checked = set()
    for key, bench in load_baselines()["benchmarks"].items():
        for entry in bench["baselines"]:
            assert entry["source"].strip(), entry["name"]
            if not entry["verified"]:
                assert entry["source"].startswith("not verified") and not entry["series"]
                continue
            name = entry["name"]
            if name.startswith("No Time to Train (authors), 10 seeds"):
                for point_b, point_s in zip(entry["series"]["bbox/AP"], entry["series"]["segm/AP"]):
                    assert _ablation_mean_cell(point_b["shots"]) == "{}±{} / {}±{}".format(
                        point_b["value"], point_b["std"], point_s["value"], point_s["std"])
            elif name.startswith("No Time to Train (authors' README)"):
                assert "36.8 bbox nAP, 34.2 segm nAP (authors' README" in readme
                assert entry["series"] == {"bbox/AP": [{"shots": 30, "value": 36.8}],
                                           "segm/AP": [{"shots": 30, "value": 34.2}]}
            else:
                row, part, metrics = README_ROWS[(key, name)]
                cells = rows[row]
                for column, shots in ((2, 10), (3, 30)):
                    values = [float(v) for v in cells[column].split("/")]
                    expected = [values[part]] if part is not None else values
                    got = [next(p["value"] for p in entry["series"][m] if p["shots"] == shots)
                           for m in metrics]
                    assert got == expected, (key, name, shots)
            checked.add((key, name))
    assert len(checked) == 9
    for method in ("DE-ViT", "FSOD-VFM"):
        assert re.search(r"^\| {} \|.*not verified".format(method), benchmarks, re.M)


def _ablation_mean_cell(shots):
    """The "mean ± std" cell of docs/BENCHMARKS.md's COCO-FSOD seed-ablation row of ``shots``."""
    for line in open(BENCHMARKS_DOC):
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0] == str(shots) and len(cells) == 12:
            return cells[-1]
    raise AssertionError("no seed-ablation row for {} shots".format(shots))
