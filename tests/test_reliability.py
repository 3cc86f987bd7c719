"""Bad inputs named where they are, nothing silently dropped, faults survived (issue 13)."""
import json
import logging
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from common import REPO, TINY_CONFIG, register, register_edited, tiny_cfg
from PIL import Image

from refseg_d2 import RefSegTargetMapper, RefSegTrainer, save_memory
from refseg_d2.predictor import RefSegPredictor

sys.path.insert(0, os.path.join(REPO, "tools"))
import demo  # noqa: E402
import train_net  # noqa: E402


def _train_net(random_weights, refs, test, out, *extra):
    sam2, dinov2 = random_weights
    args = train_net.get_parser().parse_args([
        "--config-file", TINY_CONFIG, "--eval-only",
        "DATASETS.REFERENCE", "('{}',)".format(refs), "DATASETS.TEST", "('{}',)".format(test),
        "MODEL.REFSEG.SAM2.WEIGHTS", sam2, "MODEL.REFSEG.ENCODER.WEIGHTS", dinov2,
        "OUTPUT_DIR", str(out), *extra,
    ])
    return train_net.main(args)


def _first(data, category_id):
    return next(a for a in data["annotations"] if a["category_id"] == category_id)


def _discs_dropped_by_the_loader(data):
    """Every green disc (id 7) made unusable in a way Detectron2 or pycocotools hides."""
    discs = [a for a in data["annotations"] if a["category_id"] == 7]
    discs[0]["segmentation"] = [[1.0, 2.0, 3.0, 4.0]]       # a polygon of 2 points
    for a in discs[1:]:
        a["image_id"] = 9999                                  # an image that is not listed


def test_a_class_whose_references_the_loader_drops_is_an_error_naming_them(
        random_weights, synthetic, tmp_path):
    refs = register_edited("rel_hidden", synthetic["refs"], tmp_path, _discs_dropped_by_the_loader)
    test = register("rel_targets", synthetic["targets"])
    with open(os.path.join(str(tmp_path), "rel_hidden.json")) as f:
        disc_ids = [a["id"] for a in json.load(f)["annotations"] if a["category_id"] == 7]
    with pytest.raises(ValueError) as err:
        _train_net(random_weights, refs, test, tmp_path / "out")
    text = str(err.value)
    assert "green_disc" in text
    assert "id {}".format(disc_ids[0]) in text and "every polygon is invalid" in text
    assert "id {}".format(disc_ids[1]) in text and "not listed" in text
    assert not os.path.exists(str(tmp_path / "out" / "refseg_memory.pth"))


def test_a_nan_box_is_an_error_naming_the_annotation_and_file_before_any_work(
        random_weights, synthetic, tmp_path):
    def nan_box(data):
        _first(data, 3)["bbox"][2] = float("nan")

    refs = register_edited("rel_nan", synthetic["refs"], tmp_path, nan_box)
    with open(os.path.join(str(tmp_path), "rel_nan.json")) as f:
        data = json.load(f)
    ann = _first(data, 3)
    file_name = next(i["file_name"] for i in data["images"] if i["id"] == ann["image_id"])
    cfg = tiny_cfg(random_weights, tmp_path)
    predictor = RefSegPredictor(cfg)
    predictor.model.encode_references = None        # any encoding attempt raises TypeError
    with pytest.raises(ValueError, match="Box 0 of the reference array is not a XYXY box"):
        predictor.add_references(np.zeros((20, 20, 3), np.uint8), ["a"],
                                 boxes=[[1.0, 2.0, float("nan"), 9.0]])
    json_file = os.path.join(str(tmp_path), "rel_nan.json")
    sam2, dinov2 = random_weights
    demo_args = ["--config-file", TINY_CONFIG, "--ref-coco", json_file, synthetic["refs"][1],
                 "--input", synthetic["targets"][1], "--output", str(tmp_path / "demo"), "--",
                 "MODEL.REFSEG.SAM2.WEIGHTS", sam2, "MODEL.REFSEG.ENCODER.WEIGHTS", dinov2]
    for run in (lambda: predictor.add_reference_dataset(refs),
                lambda: _train_net(random_weights, refs, register("rel_t", synthetic["targets"]),
                                   tmp_path / "out"),
                lambda: demo.main(demo_args)):
        with pytest.raises(ValueError, match=r"annotation id {} of .*{}: box .* is not finite".format(
                ann["id"], file_name)):
            run()


def test_references_not_used_as_written_are_each_reported_with_the_action(
        random_weights, synthetic, tmp_path, caplog):
    def odd_records(data):
        crowd = _first(data, 12)
        crowd["iscrowd"] = 1
        _first(data, 7).pop("segmentation")                                 # box-only
        outside = dict(_first(data, 7), id=777, bbox=[500.0, 500.0, 10.0, 10.0])
        data["annotations"].append(outside)

    refs = register_edited("rel_odd", synthetic["refs"], tmp_path, odd_records)
    cfg = tiny_cfg(random_weights, tmp_path)
    model = RefSegTrainer.build_model(cfg)
    from refseg_d2 import build_memory

    with caplog.at_level(logging.INFO, logger="refseg_d2"):
        build_memory(cfg, model, [refs])
    text = caplog.text
    assert "crowd annotation -> skipped" in text
    assert "no segmentation -> fallback: mask made by SAM 2 from the box" in text
    assert "annotation id 777" in text and "outside the image -> skipped" in text
    assert "Usable references per class" in text


def test_an_empty_test_dataset_is_a_clear_error_before_the_memory_is_filled(
        random_weights, synthetic, tmp_path):
    def no_images(data):
        data["images"], data["annotations"] = [], []

    test = register_edited("rel_empty", synthetic["targets"], tmp_path, no_images)
    refs = register("rel_refs_ok", synthetic["refs"])
    with pytest.raises(ValueError, match="test dataset 'rel_empty' has no images"):
        _train_net(random_weights, refs, test, tmp_path / "out")
    assert not os.path.exists(str(tmp_path / "out" / "refseg_memory.pth"))


@pytest.mark.parametrize("key, value, allowed", [
    ("MODEL.REFSEG.PRED_IOU_THRESH", 1.5, r"\[0, 1\]"),
    ("MODEL.REFSEG.NMS_THRESH", -0.1, r"\[0, 1\]"),
    ("MODEL.REFSEG.POINTS_PER_SIDE", 0, ">= 1"),
    ("MODEL.REFSEG.ENCODER.INPUT_SIZE", 100, "multiple of the DINOv2 patch size 14"),
    ("MODEL.REFSEG.SAM2.INPUT_SIZE", 250, "multiple of 32"),
    ("MODEL.REFSEG.MEMORY.BOX_MASK_SOURCE", "mask", "'sam2', 'box'"),
    ("MODEL.REFSEG.ACCEL.AMP", "fp8", "'bf16', 'fp16'"),
])
def test_out_of_range_config_values_are_refused_when_the_model_is_built(
        random_weights, tmp_path, key, value, allowed):
    cfg = tiny_cfg(random_weights, tmp_path, [key, value])
    with pytest.raises(ValueError, match=r"{} = {!r} is out of range: .*{}".format(
            key.replace(".", r"\."), value, allowed)):
        RefSegTrainer.build_model(cfg)


def test_a_target_whose_file_size_differs_from_its_entry_is_warned_about(tmp_path, caplog):
    path = str(tmp_path / "small.png")
    Image.new("RGB", (40, 30)).save(path)
    mapper = RefSegTargetMapper(input_size=64)
    with caplog.at_level(logging.WARNING, logger="refseg_d2"):
        out = mapper({"file_name": path, "width": 80, "height": 60})
    assert (out["width"], out["height"]) == (80, 60)
    assert "small.png is 40x30 but its dataset entry says 80x60" in caplog.text


def test_a_memory_save_killed_midway_leaves_the_previous_memory_intact(tmp_path, monkeypatch):
    from refseg_d2 import MemoryBank

    bank = MemoryBank(2, {"name": "toy"}).set([1], ["a"], [torch.ones(1, 2)])
    path = save_memory(bank, str(tmp_path / "memory.pth"))
    before = open(path, "rb").read()
    real_save = torch.save

    def killed(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)
        f.truncate(10)
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", killed)
    with pytest.raises(KeyboardInterrupt):
        save_memory(MemoryBank(2, {"name": "toy"}).set([1], ["a"], [torch.zeros(3, 2)]), path)
    assert open(path, "rb").read() == before




def _sweep(random_weights, synthetic, out, runner, *extra):
    sam2, dinov2 = random_weights
    cmd = [sys.executable, os.path.join(REPO, "tools", "sweep.py"), "--config-file", TINY_CONFIG,
           "--shots", "1", "--seeds", "0", "1", "--output-dir", str(out), *extra,
           "--register", "rel_sweep_1shot_seed0", *synthetic["refs"],
           "--register", "rel_sweep_1shot_seed1", *synthetic["refs_boxes"],
           "--register", "rel_sweep_targets", *synthetic["targets"],
           "DATASETS.REFERENCE", "('rel_sweep_1shot_seed0',)",
           "DATASETS.TEST", "('rel_sweep_targets',)",
           "MODEL.REFSEG.SAM2.WEIGHTS", sam2, "MODEL.REFSEG.ENCODER.WEIGHTS", dinov2]
    return runner(cmd)


def _kill_after_first_run(cmd, out):
    """Start the sweep, SIGKILL it (and any process it started) once the first run has finished."""
    proc = subprocess.Popen(cmd, cwd=REPO, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first = os.path.join(str(out), "1shot_seed0", "metrics.json")
    deadline = time.time() + 600
    while not os.path.isfile(first) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return first


def test_a_sweep_killed_mid_run_resumes_to_the_results_of_an_uninterrupted_one(
        random_weights, synthetic, tmp_path):
    straight = tmp_path / "straight"
    assert _sweep(random_weights, synthetic, straight, lambda c: subprocess.call(
        c, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)) == 0
    killed = tmp_path / "killed"
    # one run per pass: the second run's pass (its proposals again) starts after the first is done
    first = _sweep(random_weights, synthetic, killed, lambda c: _kill_after_first_run(c, killed),
                   "--runs-per-pass", "1")
    assert os.path.isfile(first)
    assert not os.path.isfile(os.path.join(str(killed), "1shot_seed1", "metrics.json"))
    done = [os.path.join(os.path.dirname(first), *f) for f in (
        ("metrics.json",), ("refseg_memory.pth",),
        ("inference", "rel_sweep_targets", "coco_instances_results.json"))]
    stamps = [os.stat(f).st_mtime_ns for f in done]
    assert _sweep(random_weights, synthetic, killed, lambda c: subprocess.call(
        c, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)) == 0
    assert [os.stat(f).st_mtime_ns for f in done] == stamps    # the finished run is not redone
    with open(os.path.join(str(killed), "log.txt")) as f:
        assert "Sweep of 2 runs: 1 finished (not redone), 1 to run: ['1shot_seed1']" in f.read()
    for run in ("1shot_seed0", "1shot_seed1"):
        for name in ("metrics.json", os.path.join("inference", "rel_sweep_targets",
                                                  "coco_instances_results.json")):
            with open(os.path.join(str(straight), run, name)) as f, \
                    open(os.path.join(str(killed), run, name)) as g:
                assert f.read() == g.read(), (run, name)
    with open(os.path.join(str(straight), "results.csv")) as f, \
            open(os.path.join(str(killed), "results.csv")) as g:
        assert f.read() == g.read()


def test_files_of_other_loaders_are_not_read_as_coco(tmp_path):
    """LVIS-format files (images named by coco_url) are validated from their dataset dicts only."""
    from detectron2.data import MetadataCatalog

    from refseg_d2.data.validation import validate_references

    lvis = {"images": [{"id": 1, "coco_url": "http://x/train2017/000000000001.jpg",
                        "width": 50, "height": 40}],
            "annotations": [{"id": 5, "image_id": 1, "category_id": 1, "bbox": [1, 1, 10, 10],
                             "segmentation": [[1, 1, 11, 1, 11, 11]]}],
            "categories": [{"id": 1, "name": "thing"}]}
    path = str(tmp_path / "lvis_style.json")
    with open(path, "w") as f:
        json.dump(lvis, f)
    MetadataCatalog.get("rel_lvis_style").set(json_file=path, image_root=str(tmp_path))
    dicts = [{"file_name": str(tmp_path / "000000000001.jpg"), "width": 50, "height": 40,
              "annotations": [{"bbox": [1.0, 1.0, 10.0, 10.0], "bbox_mode": 1,
                               "category_id": 0, "segmentation": [[1, 1, 11, 1, 11, 11]]}]}]
    assert validate_references([("rel_lvis_style", dicts)], ["thing"], 0.2) == {0: 1}


def test_lvis_references_pass_the_validation_with_every_class_usable(tmp_path, monkeypatch):
    from test_benchmark_baseline_protocols import make_lvis_tree
    from test_benchmark_datasets import register_under

    from refseg_d2.data.validation import validate_references
    from refseg_d2.engine.memory_filling import load_references

    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path))
    register_under(tmp_path)
    make_lvis_tree(tmp_path)
    _, _, names, parts = load_references(["lvis_v1_train_2shot_seed42"])
    usable = validate_references(parts, names, 0.2)
    assert len(names) == 1203 and all(usable[c] == 2 for c in range(len(names)))
