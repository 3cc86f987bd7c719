"""End to end through tools/train_net.py on synthetic COCO-format data, as users run it."""
import json
import math
import os
import subprocess
import sys

import pytest
from common import REPO, TINY_CONFIG


def run_train_net(random_weights, synthetic, output_dir, *extra, refs="refs", num_gpus=1):
    sam2, dinov2 = random_weights
    cmd = [
        sys.executable, os.path.join(REPO, "tools", "train_net.py"),
        "--config-file", TINY_CONFIG, "--num-gpus", str(num_gpus), "--dist-url", "auto",
        "--register", "e2e_refs", *synthetic[refs],
        "--register", "e2e_targets", *synthetic["targets"],
        *[a for a in extra if a.startswith("--")],
        "DATASETS.REFERENCE", '("e2e_refs",)', "DATASETS.TEST", '("e2e_targets",)',
        "MODEL.REFSEG.SAM2.WEIGHTS", sam2, "MODEL.REFSEG.ENCODER.WEIGHTS", dinov2,
        "OUTPUT_DIR", str(output_dir),
        *[a for a in extra if not a.startswith("--")],
    ]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-5000:]
    with open(os.path.join(str(output_dir), "metrics.json")) as f:
        metrics = json.load(f)
    return metrics, log


def predictions(output_dir):
    path = os.path.join(str(output_dir), "inference", "e2e_targets", "coco_instances_results.json")
    with open(path) as f:
        preds = json.load(f)
    return sorted(preds, key=lambda p: (p["image_id"], -p["score"], p["category_id"]))


def assert_same_predictions(a, b):
    assert len(a) == len(b)
    for pa, pb in zip(a, b):
        assert (pa["image_id"], pa["category_id"]) == (pb["image_id"], pb["category_id"])
        assert pa["score"] == pytest.approx(pb["score"], abs=1e-5)
        assert pa["bbox"] == pytest.approx(pb["bbox"])
        assert pa["segmentation"] == pb["segmentation"]


def assert_same_metrics(a, b):
    assert set(a) == set(b)
    for task in a:
        for key, value in a[task].items():
            other = b[task][key]
            assert (math.isnan(value) and math.isnan(other)) or value == pytest.approx(other)


@pytest.fixture(scope="module")
def single_run(random_weights, synthetic, tmp_path_factory):
    out = tmp_path_factory.mktemp("e2e_1proc")
    metrics, log = run_train_net(random_weights, synthetic, out, "--eval-only")
    return out, metrics, log


def test_eval_only_builds_memory_and_reports_bbox_and_segm_metrics(single_run):
    out, metrics, log = single_run
    assert set(metrics) == {"bbox", "segm"}
    for task in ("bbox", "segm"):
        for key in ("AP", "AP50", "AP75", "AP-red_square", "AP-green_disc", "AP-blue_triangle"):
            assert key in metrics[task]
    assert os.path.isfile(os.path.join(str(out), "refseg_memory.pth"))
    assert "Filling the memory from ('e2e_refs',)" in log
    assert "Per-stage time" in log
    image_ids = {p["image_id"] for p in predictions(out)}
    assert image_ids and image_ids <= {101, 102, 103, 104, 105}   # 105: the image without objects
    assert {p["category_id"] for p in predictions(out)} <= {3, 7, 12}


def test_two_processes_give_the_metrics_of_one(single_run, random_weights, synthetic, tmp_path):
    out1, metrics1, _ = single_run
    metrics2, log = run_train_net(random_weights, synthetic, tmp_path, "--eval-only", num_gpus=2)
    checksums = []
    for name in ("log.txt", "log.txt.rank1"):
        with open(os.path.join(str(tmp_path), name)) as f:
            line = [ln for ln in f if "Memory filled" in ln][0]
        checksums.append(line.split("checksum")[-1].strip())
    assert checksums[0] == checksums[1]   # every rank holds the identical memory
    assert_same_metrics(metrics1, metrics2)
    assert_same_predictions(predictions(out1), predictions(tmp_path))


def test_reloaded_memory_skips_filling_and_gives_identical_predictions(
    single_run, random_weights, synthetic, tmp_path
):
    out1, metrics1, _ = single_run
    memory = os.path.join(str(out1), "refseg_memory.pth")
    metrics2, log = run_train_net(
        random_weights, synthetic, tmp_path, "--eval-only", "MODEL.WEIGHTS", memory,
        refs="refs_boxes",   # ignored: the loaded memory is used
    )
    assert "Filling the memory" not in log
    assert "Using the loaded memory" in log
    assert_same_metrics(metrics1, metrics2)
    assert_same_predictions(predictions(out1), predictions(tmp_path))


def test_without_eval_only_fills_saves_then_evaluates(single_run, random_weights, synthetic, tmp_path):
    _, metrics1, _ = single_run
    metrics2, log = run_train_net(random_weights, synthetic, tmp_path)
    assert "Filling the memory" in log
    assert os.path.isfile(os.path.join(str(tmp_path), "refseg_memory.pth"))
    assert_same_metrics(metrics1, metrics2)


def test_saved_memory_records_where_each_slot_comes_from(single_run, synthetic):
    from detectron2.data.datasets import load_coco_json

    from refseg_d2.data.reference_sources import reference_provenance
    from refseg_d2 import load_memory

    out, _, _ = single_run
    memory = load_memory(os.path.join(str(out), "refseg_memory.pth"))
    provenance = memory.provenance
    assert [len(p) for p in provenance] == memory.counts.tolist()
    dicts = load_coco_json(*synthetic["refs"], dataset_name="e2e_refs_provenance")
    expected = reference_provenance(dicts, memory.num_classes, context_ratio=0.2)
    assert provenance == expected


def test_the_trainer_loads_and_checks_each_test_dataset_once(random_weights, synthetic, tmp_path,
                                                             monkeypatch):
    from common import count_loads_and_checks, register, tiny_cfg

    from refseg_d2 import RefSegTrainer

    targets = register("once_targets", synthetic["targets"])
    refs = register("once_refs", synthetic["refs"])
    loads, checks, load = count_loads_and_checks(targets, monkeypatch)
    cfg = tiny_cfg(random_weights, str(tmp_path), [
        "DATASETS.TEST", (targets,), "DATASETS.REFERENCE", (refs,),
        "MODEL.REFSEG.MEMORY.SAVE_NAME", ""])
    model = RefSegTrainer.build_model(cfg)
    results = RefSegTrainer.test(cfg, model)
    assert "segm" in results or "bbox" in results
    assert len(loads) == 1 and len(checks) == 1
    assert model.timer.num_images == len(load())
