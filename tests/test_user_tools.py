"""tools/demo.py, tools/inspect_memory.py, tools/visualize_results.py and the reference sources."""
import json
import os
import shutil
import sys

import numpy as np
import pytest
import torch
from common import REPO, TINY_CONFIG, register, tiny_cfg
from detectron2.data import DatasetCatalog
from detectron2.evaluation.coco_evaluation import instances_to_coco_json
from PIL import Image

from refseg_d2.data.reference_sources import load_box_references, load_folder_references
from refseg_d2.modeling.memory import load_memory
from refseg_d2.modeling.memory.report import flag_outliers, leave_one_out
from refseg_d2.predictor import RefSegPredictor
from refseg_d2.utils.masks import decode_segmentation
from refseg_d2.utils.visualization import coco_results_to_instances

sys.path.insert(0, os.path.join(REPO, "tools"))
import demo  # noqa: E402
import inspect_memory  # noqa: E402
import visualize_results  # noqa: E402

CLASSES = ["red_square", "green_disc", "blue_triangle"]


def weight_opts(random_weights):
    sam2, dinov2 = random_weights
    return ["--", "MODEL.REFSEG.SAM2.WEIGHTS", sam2, "MODEL.REFSEG.ENCODER.WEIGHTS", dinov2]


def load_json(*parts):
    with open(os.path.join(*parts)) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def demo_run(random_weights, synthetic, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("demo"))
    summary = demo.main([
        "--config-file", TINY_CONFIG, "--ref-coco", *synthetic["refs"], "--input",
        synthetic["targets"][1], "--output", out, "--score-thresh", "0.3",
        *weight_opts(random_weights),
    ])
    return out, summary


def write_folder_layout(split, root):
    """The split's references as <root>/<class>/<image>_<k>.png with <image>_<k>_mask.png."""
    name = register("tools_folder_src", split)
    for d in DatasetCatalog.get(name):
        stem = os.path.splitext(os.path.basename(d["file_name"]))[0]
        for k, ann in enumerate(d["annotations"]):
            folder = os.path.join(root, CLASSES[ann["category_id"]])
            os.makedirs(folder, exist_ok=True)
            shutil.copy(d["file_name"], os.path.join(folder, "{}_{}.png".format(stem, k)))
            mask = decode_segmentation(ann["segmentation"], d["height"], d["width"])
            Image.fromarray(mask.astype(np.uint8) * 255).save(
                os.path.join(folder, "{}_{}_mask.png".format(stem, k)))
    return root


def write_box_file(split, path):
    coco = load_json(split[0])
    names = {c["id"]: c["name"] for c in coco["categories"]}
    files = {im["id"]: os.path.join(split[1], im["file_name"]) for im in coco["images"]}
    refs = [
        {"file_name": files[a["image_id"]], "category": names[a["category_id"]], "bbox": a["bbox"]}
        for a in coco["annotations"]
    ]
    with open(path, "w") as f:
        json.dump({"references": refs}, f)
    return path


def test_demo_writes_a_visualisation_per_image_and_one_coco_results_file(demo_run, synthetic):
    out, summary = demo_run
    targets = sorted(os.listdir(synthetic["targets"][1]))
    assert sorted(os.listdir(os.path.join(out, "vis"))) == targets
    info = load_json(out, demo.IMAGE_INFO_FILE)
    assert [os.path.basename(im["file_name"]) for im in info["images"]] == targets
    assert [c["id"] for c in info["categories"]] == [3, 7, 12]
    sizes = {im["id"]: (im["height"], im["width"]) for im in info["images"]}
    results = load_json(out, demo.RESULTS_FILE)
    assert len(results) == summary["detections"] > 0
    for r in results:
        assert r["image_id"] in sizes and r["category_id"] in (3, 7, 12)
        assert 0 < r["score"] <= 1 and len(r["bbox"]) == 4
        assert tuple(r["segmentation"]["size"]) == sizes[r["image_id"]]
    assert summary["images"] == len(targets)
    assert summary["above_thresh"] == sum(r["score"] >= 0.3 for r in results)
    assert os.path.isfile(os.path.join(out, demo.MEMORY_NAME + ".pth"))


def memory_predictor(random_weights, out):
    memory = os.path.join(out, demo.MEMORY_NAME + ".pth")
    return RefSegPredictor(tiny_cfg(random_weights, out, ["MODEL.WEIGHTS", memory]))


def test_demo_results_are_what_the_predictor_returns(demo_run, random_weights):
    out, _ = demo_run
    predictor = memory_predictor(random_weights, out)
    results = load_json(out, demo.RESULTS_FILE)
    ids = predictor.memory.class_ids.tolist()
    for im in load_json(out, demo.IMAGE_INFO_FILE)["images"][:2]:
        expected = instances_to_coco_json(predictor(im["file_name"])["instances"].to("cpu"), im["id"])
        got = [r for r in results if r["image_id"] == im["id"]]
        assert [r["category_id"] for r in got] == [ids[e["category_id"]] for e in expected]
        assert [r["segmentation"] for r in got] == [e["segmentation"] for e in expected]
        assert [r["score"] for r in got] == pytest.approx([e["score"] for e in expected])


def test_demo_reuses_a_saved_memory_without_reading_references(demo_run, random_weights, synthetic,
                                                              tmp_path, monkeypatch):
    out, _ = demo_run
    monkeypatch.setattr("refseg_d2.predictor.build_memory", lambda *a, **k: pytest.fail("refilled"))
    first = os.path.join(synthetic["targets"][1], sorted(os.listdir(synthetic["targets"][1]))[0])
    summary = demo.main([
        "--config-file", TINY_CONFIG, "--memory", os.path.join(out, "refseg_memory.pth"),
        "--input", first, "--output", str(tmp_path), *weight_opts(random_weights),
    ])
    again = load_json(str(tmp_path), demo.RESULTS_FILE)
    before = [r for r in load_json(out, demo.RESULTS_FILE) if r["image_id"] == 1]
    assert summary["images"] == 1
    assert [r["segmentation"] for r in again] == [r["segmentation"] for r in before]


def test_demo_takes_folder_and_box_only_references(random_weights, synthetic, tmp_path):
    root = write_folder_layout(synthetic["refs"], str(tmp_path / "folder"))
    boxes = write_box_file(synthetic["refs"], str(tmp_path / "boxes.json"))
    first = os.path.join(synthetic["targets"][1], "*_0101.png")
    for option, source in (("--ref-folder", root), ("--ref-boxes", boxes)):
        out = str(tmp_path / option.strip("-"))
        demo.main(["--config-file", TINY_CONFIG, option, source, "--input", first, "--output", out,
                   *weight_opts(random_weights)])
        memory = load_memory(os.path.join(out, "refseg_memory.pth"))
        provenance = memory.provenance
        assert memory.class_names == sorted(CLASSES) and memory.class_ids.tolist() == [1, 2, 3]
        assert memory.counts.tolist() == [4, 4, 4]
        assert [len(p) for p in provenance] == [4, 4, 4]
        assert len(load_json(out, demo.IMAGE_INFO_FILE)["images"]) == 1


def test_reference_sources_read_folders_and_box_files(synthetic, tmp_path):
    root = write_folder_layout(synthetic["refs"], str(tmp_path / "folder"))
    dicts, ids, names = load_folder_references(root)
    assert names == sorted(CLASSES) and ids == [1, 2, 3] and len(dicts) == 12
    assert all(len(d["annotations"]) == 1 and d["annotations"][0]["segmentation"]["counts"]
               for d in dicts)
    box_file = write_box_file(synthetic["refs"], str(tmp_path / "b.json"))
    dicts, ids, names = load_box_references(box_file)
    assert names == sorted(CLASSES) and sum(len(d["annotations"]) for d in dicts) == 12
    assert all("segmentation" not in a for d in dicts for a in d["annotations"])


def test_reference_source_errors_name_the_file_at_fault(synthetic, tmp_path):
    root = write_folder_layout(synthetic["refs"], str(tmp_path / "folder"))
    folder = os.path.join(root, "green_disc")
    mask = sorted(f for f in os.listdir(folder) if f.endswith("_mask.png"))[0]
    os.remove(os.path.join(folder, mask))
    with pytest.raises(FileNotFoundError, match=mask):
        load_folder_references(root)
    bad = str(tmp_path / "bad.json")
    with open(bad, "w") as f:
        json.dump([{"file_name": "a.png", "category": "x", "box": [5, 5, 2, 9]}], f)
    with pytest.raises(ValueError, match="bad.json, reference 0: empty box"):
        load_box_references(bad)


def test_demo_inputs_are_files_folders_and_globs_in_order(synthetic):
    folder = synthetic["targets"][1]
    files = sorted(os.path.join(folder, f) for f in os.listdir(folder))
    got = demo.collect_inputs([files[2], folder, os.path.join(folder, "*_010[12].png")])
    assert got == [files[2]] + [f for f in files if f != files[2]]
    with pytest.raises(FileNotFoundError, match="nothing"):
        demo.collect_inputs([os.path.join(folder, "nothing*.png")])


def test_inspect_memory_reports_similarities_from_the_memory_and_a_crop_sheet(demo_run, tmp_path):
    out, _ = demo_run
    memory_file = os.path.join(out, "refseg_memory.pth")
    report = inspect_memory.main([memory_file, "--output", str(tmp_path)])
    memory = load_memory(memory_file)
    provenance = memory.provenance
    assert report == load_json(str(tmp_path), "report.json")
    assert [(c["id"], c["name"], c["shots"]) for c in report["classes"]] == list(
        zip([3, 7, 12], memory.class_names, memory.counts.tolist()))
    protos = memory.prototypes()
    similarity = torch.tensor(report["prototype_similarity"])
    assert torch.allclose(similarity, protos @ protos.t(), atol=1e-5)
    for refs, records, count in zip(report["references"], provenance, memory.counts.tolist()):
        assert len(refs["shots"]) == count
        assert all(-1 <= s["loo"] <= 1 and isinstance(s["flags"], list) for s in refs["shots"])
        sources = [s["source"]["file_name"] for s in refs["shots"]]
        assert sources == [r["file_name"] for r in records]
    with Image.open(os.path.join(str(tmp_path), "reference_crops.png")) as sheet:
        assert sheet.height > 3 * 96
    assert os.path.getsize(os.path.join(str(tmp_path), "report.txt")) > 0


def test_inspect_memory_rebuilds_crop_sources_from_the_reference_dataset(demo_run, synthetic,
                                                                         tmp_path):
    out, _ = demo_run
    saved = torch.load(os.path.join(out, "refseg_memory.pth"))
    with_sources = saved.pop("refseg_references")
    plain = str(tmp_path / "plain.pth")
    torch.save(saved, plain)
    assert not any(load_memory(plain).provenance)
    report = inspect_memory.main([plain, "--output", str(tmp_path / "r"),
                                  "--ref-coco", *synthetic["refs"]])
    for refs, records in zip(report["references"], with_sources):
        windows = [s["source"]["crop_window"] for s in refs["shots"]]
        assert windows == [r["crop_window"] for r in records]


def test_outliers_are_references_far_from_the_rest_of_their_class():
    feats = torch.zeros(2, 4, 3)
    feats[0, :3] = torch.tensor([[1.0, 0.05, 0], [1.0, -0.05, 0], [1.0, 0, 0.05]])
    feats[0, 3] = torch.tensor([0.0, 1.0, 0.0])
    feats[1, 0] = torch.tensor([0.0, 1.0, 0.1])
    counts = torch.tensor([4, 1])
    stats = leave_one_out(feats, counts)
    flags = flag_outliers(stats["loo"], counts, stats["other"])
    assert flags[0][:3] == [[], [], []]
    assert "closer to another class" in flags[0][3]
    assert any(f.startswith("low") for f in flags[0][3])
    assert flags[1] == [[]] and torch.isnan(stats["loo"][1, 0])
    assert int(stats["other_class"][0, 3]) == 1


def test_visualize_results_draws_ground_truth_next_to_the_model_predictions(
    demo_run, random_weights, synthetic, tmp_path
):
    out, _ = demo_run
    predictor = memory_predictor(random_weights, out)
    dicts = DatasetCatalog.get(register("tools_targets", synthetic["targets"]))[:2]
    results, predictions = [], {}
    for d in dicts:
        inst = predictor(d["file_name"])["instances"].to("cpu")
        predictions[d["image_id"]] = inst
        for r in instances_to_coco_json(inst, d["image_id"]):
            results.append(dict(r, category_id=[3, 7, 12][r["category_id"]]))
    path = str(tmp_path / "results.json")
    with open(path, "w") as f:
        json.dump(results, f)
    written = visualize_results.main(["--results", path, "--gt", *synthetic["targets"],
                                      "--output", str(tmp_path / "vis"), "--max-images", "2"])
    names = [os.path.basename(d["file_name"]) for d in dicts]
    assert [os.path.basename(p) for p in written] == names
    for d, p in zip(dicts, written):
        with Image.open(p) as im:
            assert im.size == (2 * d["width"] + 4, d["height"])
        back = coco_results_to_instances([r for r in results if r["image_id"] == d["image_id"]],
                                         d["height"], d["width"], {3: 0, 7: 1, 12: 2})
        assert torch.equal(back.pred_masks, predictions[d["image_id"]].pred_masks)
        assert torch.equal(back.pred_classes, predictions[d["image_id"]].pred_classes)


def test_json_inputs_that_are_missing_or_broken_are_errors_naming_the_file(tmp_path):
    from refseg_d2.utils.files import read_json

    missing = str(tmp_path / "nowhere.json")
    with pytest.raises(FileNotFoundError, match="Results file not found: .*nowhere.json"):
        read_json(missing, "Results file")
    broken = tmp_path / "broken.json"
    broken.write_text("[1, 2")
    with pytest.raises(ValueError, match="Box reference file .*broken.json is not valid JSON"):
        read_json(str(broken), "Box reference file")
    broken.write_text('{"a": [1, 2]}')
    assert read_json(str(broken), "Box reference file") == {"a": [1, 2]}
