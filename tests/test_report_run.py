"""
OUTPUT_DIR/report.html: the per-image recall behind its gallery (hand-made masks), the page
written by tools/train_net.py and rendered by headless Chromium, ``--no-report``, and a report
whose sections fail still being written.
"""
import html
import json
import logging
import os
import re
import shutil
import subprocess

import numpy as np
import pytest
from common import tiny_cfg
from test_train_net import run_train_net

from refseg_d2.reporting import (
    best_and_worst,
    ground_truth_records,
    image_recall,
    try_write_run_report,
    write_run_report,
)
from refseg_d2.reporting.run_report import per_class_ap
from refseg_d2.utils.masks import encode_mask
from refseg_d2.utils.timing import StageTimer

BROWSERS = ("chromium-headless-shell", "chromium", "chromium-browser", "google-chrome")
# Appended to a copy of the report: the page's text and how many images decoded, as JSON.
CHECK_SCRIPT = """<script>window.addEventListener("load", function () {
  var images = Array.prototype.slice.call(document.images);
  var decoded = images.filter(function (i) { return i.complete && i.naturalWidth > 0; });
  var out = {images: images.length, decoded: decoded.length, text: document.body.innerText};
  var pre = document.createElement("pre"); pre.id = "render-check";
  pre.textContent = JSON.stringify(out); document.body.appendChild(pre);
});</script>"""


def _mask(rows, cols, shape=(10, 10)):
    m = np.zeros(shape, dtype=bool)
    m[rows[0]:rows[1], cols[0]:cols[1]] = True
    return m


def _pred(category, score, mask):
    ys, xs = np.nonzero(mask)
    box = [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1),
           float(ys.max() - ys.min() + 1)]
    return {"category_id": category, "score": score, "bbox": box, "segmentation": encode_mask(mask)}


def test_per_image_recall_at_iou_half_on_hand_made_masks():
    a, b = _mask((0, 4), (0, 4)), _mask((5, 10), (5, 10))          # 16 px (class 1), 25 px (2)
    gt = [dict(_pred(1, 1.0, a), iscrowd=0), dict(_pred(2, 1.0, b), iscrowd=0),
          dict(_pred(2, 1.0, _mask((0, 2), (8, 10))), iscrowd=1)]   # crowd: not counted
    preds = [
        _pred(1, 0.9, _mask((0, 4), (0, 3))),    # IoU 12 / 16 = 0.75 with a: match
        _pred(1, 0.8, a),                        # a already taken: no second match
        _pred(1, 0.7, b),                        # IoU 1 with b, wrong class
        _pred(2, 0.6, _mask((5, 10), (5, 7))),   # IoU 10 / 25 = 0.4 with b: too low
        _pred(2, 0.2, _mask((5, 10), (5, 8))),   # IoU 15 / 25 = 0.6 with b: match at score >= 0
    ]
    r = image_recall(preds, gt, 10, 10, iou_thresh=0.5, score_thresh=0.0)
    assert (r["recall"], r["matched"], r["total"]) == (1.0, 2, 2)
    assert sorted(r["matches"]) == [(0, 0), (4, 1)]
    r = image_recall(preds, gt, 10, 10, iou_thresh=0.5, score_thresh=0.3)
    assert (r["recall"], r["matches"]) == (0.5, [(0, 0)])
    r = image_recall(preds, gt, 10, 10, iou_thresh=0.8)    # 0.75 < 0.8: a goes to the exact copy
    assert (r["recall"], r["matches"]) == (0.5, [(1, 0)])
    assert image_recall([], gt, 10, 10)["recall"] == 0.0
    assert image_recall(preds, gt[2:], 10, 10)["recall"] is None          # only crowd


def test_box_iou_is_used_where_the_ground_truth_has_no_mask():
    gt = [{"category_id": 1, "bbox": [0.0, 0.0, 4.0, 2.0], "segmentation": None, "iscrowd": 0}]
    hit = {"category_id": 1, "score": 0.9, "bbox": [0.0, 0.0, 4.0, 4.0]}       # IoU 8 / 16
    miss = {"category_id": 1, "score": 0.9, "bbox": [0.0, 0.0, 4.0, 5.0]}      # IoU 8 / 20
    assert image_recall([hit], gt, 10, 10)["recall"] == 1.0
    assert image_recall([miss], gt, 10, 10)["recall"] == 0.0


def test_ground_truth_records_convert_detectron2_dataset_dicts():
    from detectron2.structures import BoxMode

    d = {"height": 10, "width": 10, "annotations": [
        {"category_id": 0, "bbox": [1, 2, 5, 6], "bbox_mode": BoxMode.XYXY_ABS,
         "segmentation": [[1, 2, 5, 2, 5, 6, 1, 6]]},
        {"category_id": 1, "bbox": [0, 0, 3, 3], "bbox_mode": BoxMode.XYWH_ABS, "iscrowd": 1}]}
    records = ground_truth_records(d, {0: 3, 1: 7})
    assert [r["category_id"] for r in records] == [3, 7]
    assert records[0]["bbox"] == [1.0, 2.0, 4.0, 4.0] and records[1]["segmentation"] is None
    assert records[0]["segmentation"]["size"] == [10, 10] and records[1]["iscrowd"] == 1


def test_gallery_picks_the_best_and_the_worst_images_without_overlap():
    recalls = [0.5, None, 1.0, 0.0, 0.5, 1.0, 0.25]
    assert best_and_worst(recalls, 2) == ([2, 5], [3, 6])
    assert best_and_worst([0.2, 0.9, None], 3) == ([1], [0])
    assert best_and_worst([None], 3) == ([], [])


def test_per_class_ap_is_sorted_highest_first_with_nan_last():
    res = {"AP": 1.0, "AP-b": 10.0, "AP-a": float("nan"), "AP-c": 30.0, "AP50": 2.0}
    assert [c for c, _ in per_class_ap(res)] == ["c", "b", "a"]


def find_browser():
    """A headless Chromium; missing one fails where `make install` would have installed it."""
    for name in BROWSERS:
        if shutil.which(name):
            return shutil.which(name)
    if os.environ.get("REFSEG_NO_BROWSER"):
        pytest.skip("REFSEG_NO_BROWSER is set: the browser render test is turned off")
    root_apt = hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get")
    if root_apt or os.environ.get("CI"):
        pytest.fail("No headless Chromium found ({}): `make install` (tools/install_stack.sh) "
                    "installs the Debian package chromium-headless-shell".format(
                        ", ".join(BROWSERS)))
    pytest.skip("No headless Chromium ({}) and no root apt-get to install it: install "
                "chromium-headless-shell or chromium to run this test".format(", ".join(BROWSERS)))


def render(report_path, tmp_path):
    """{"images", "decoded", "text"} of the report as headless Chromium renders it."""
    browser = find_browser()
    page = open(report_path).read()
    copy = tmp_path / "render_check.html"
    copy.write_text(page.replace("</body>", CHECK_SCRIPT + "</body>"))
    proc = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu",
                           "--virtual-time-budget=10000", "--dump-dom", copy.as_uri()],
                          capture_output=True, text=True, timeout=120)
    found = re.search(r'<pre id="render-check">(.*?)</pre>', proc.stdout, re.S)
    assert found, "no render check in the DOM; stderr: " + proc.stderr[-2000:]
    return json.loads(html.unescape(found.group(1)))


@pytest.fixture(scope="module")
def reported_run(random_weights, synthetic, tmp_path_factory):
    out = tmp_path_factory.mktemp("report_run")
    metrics, log = run_train_net(random_weights, synthetic, out, "--eval-only")
    return out, metrics, log


def test_train_net_writes_a_self_contained_report_that_a_browser_renders(reported_run, tmp_path):
    out, metrics, log = reported_run
    path = os.path.join(str(out), "report.html")
    assert "Run report written to" in log
    page = open(path).read()
    assert not re.search(r'(src|href)="(?!data:)', page)          # nothing fetched
    assert os.path.getmtime(path) >= os.path.getmtime(os.path.join(str(out), "metrics.json"))
    result = render(path, tmp_path)
    assert result["images"] >= 3 and result["decoded"] == result["images"]
    text = result["text"]
    for expected in ("Metrics", "Per-class AP", "Time per stage and peak memory",
                     "sam2_prompt_decoding", "peak RSS", "Reference set", "Best recall",
                     "Worst recall", "e2e_refs", "e2e_targets"):
        assert expected in text, expected
    assert "This section failed" not in text
    assert "{:.2f}".format(metrics["segm"]["AP"]) in text
    for task in ("bbox", "segm"):
        order = [c for c, _ in per_class_ap(metrics[task])]
        table = text.split("e2e_targets " + task, 1)[1]
        positions = [table.index(c) for c in order]
        assert positions == sorted(positions), (task, order)
    counts = re.findall(r"(red_square|green_disc|blue_triangle)\s+(\d+)\n", text)
    assert ("red_square", "4") in counts   # shots per class (the refs split: 4 per class)


def test_no_report_flag_skips_the_report(reported_run, random_weights, synthetic, tmp_path):
    out, metrics, _ = reported_run
    memory = os.path.join(str(out), "refseg_memory.pth")
    metrics2, log = run_train_net(random_weights, synthetic, tmp_path, "--eval-only",
                                  "--no-report", "MODEL.WEIGHTS", memory)
    assert not os.path.exists(os.path.join(str(tmp_path), "report.html"))
    assert "Run report" not in log
    assert metrics2["segm"]["AP"] == pytest.approx(metrics["segm"]["AP"])


class _Capture(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def test_a_failing_section_is_a_warning_and_the_report_is_still_written(random_weights, tmp_path):
    cfg = tiny_cfg(random_weights, str(tmp_path), ["DATASETS.TEST", '("nowhere",)'])
    capture = _Capture()
    logger = logging.getLogger("refseg_d2.reporting.run_report")
    logger.addHandler(capture)
    try:
        path = write_run_report(cfg, object(), {"bbox": {"AP": 12.5, "AP-cat": 3.0}})
        (tmp_path / "blocked").write_text("a file, not a folder")
        assert try_write_run_report(cfg, object(), {}, output_dir=str(tmp_path / "blocked")) is None
    finally:
        logger.removeHandler(capture)
    page = open(path).read()
    assert "12.50" in page and "cat" in page
    assert page.count("This section failed") == 2     # timing and references: no timer, no memory
    timed = open(write_run_report(cfg, None, {}, output_dir=str(tmp_path / "t"),
                                  timer=StageTimer())).read()
    assert timed.count("This section failed") == 1 and "no memory (neither given" in timed
    assert "nowhere: no predictions file" in page
    failed = [m for m in capture.messages if "section" in m]
    assert any("'Time per stage and peak memory' failed" in m for m in failed)
    assert any("'Reference set' failed" in m for m in failed)
    assert any("The run report was not written" in m for m in capture.messages)
