"""tools/sweep.py (run plan, tables), tools/add_sam2_masks.py (resume, atomic output), and one
COCO-FSOD sweep end to end on a fake COCO tree with the tiny random-weight model."""
import csv
import json
import os
import sys

import numpy as np
import pytest
from common import REPO, TINY_CONFIG
from test_benchmark_datasets import (
    _write_cdfsod_file, _write_png, make_cdfsod_tree, make_coco_tree, make_voc_tree, register_under,
)

from refseg_d2.data.box_masks import encode_mask

sys.path.insert(0, os.path.join(REPO, "tools"))
import add_sam2_masks  # noqa: E402
import sweep  # noqa: E402

COCO_FSOD = os.path.join(REPO, "configs", "benchmarks", "coco_fsod.yaml")


def _finished_run(out, shots, seed):
    """A run folder as a finished sweep run leaves it (its metrics.json)."""
    folder = os.path.join(out, "{}shot_seed{}".format(shots, seed))
    os.makedirs(folder)
    with open(os.path.join(folder, "metrics.json"), "w") as f:
        json.dump({"bbox": {"AP": 10 * shots + seed, "AP50": 50.0, "AP-person": 1.0},
                   "segm": {"AP": 5.0 * seed}}, f)


def test_sweep_aggregates_mean_and_std_of_the_finished_runs(tmp_path):
    out = str(tmp_path / "sweep")
    argv = ["--config-file", COCO_FSOD, "--shots", "1", "2", "--seeds", "1", "2", "3",
            "--output-dir", out, "--aggregate-only"]
    with pytest.raises(RuntimeError, match="No finished run"):
        sweep.main(argv)
    for shots, seed in ((1, 1), (1, 2), (1, 3), (2, 1), (2, 3)):
        _finished_run(out, shots, seed)
    table, sets = sweep.main(argv)
    assert list(table[2]) == [1, 3] and not sets     # 2shot_seed2 is not finished: left out
    _finished_run(out, 2, 2)
    sweep.main(argv)
    with open(os.path.join(out, "results.csv")) as f:
        rows = {(r["shots"], r["metric"]): r for r in csv.DictReader(f)}
    row = rows[("1", "bbox/AP")]
    assert (int(row["n"]), float(row["mean"]), float(row["std"])) == (3, 12.0, 1.0)
    assert [float(row["seed_{}".format(s)]) for s in (1, 2, 3)] == [11.0, 12.0, 13.0]
    assert ("1", "bbox/AP-person") not in rows         # per-class metrics left out by default
    md = open(os.path.join(out, "results.md")).read()
    assert "| 2 | 3 | 22.0 ± 1.0 | 50.0 ± 0.0 | 10.0 ± 5.0 |" in md
    with pytest.raises(ValueError, match="sweep.json holds a sweep"):
        sweep.main(argv + ["MODEL.REFSEG.NMS_THRESH", "0.6"])


def test_sweep_plans_shots_seeds_and_explicit_sets_but_samples_nothing(tmp_path):
    from detectron2.data import DatasetCatalog

    from refseg_d2.utils.catalog import unregister

    out = str(tmp_path / "sweep")
    args = sweep.parse_args([
        "--config-file", COCO_FSOD, "--shots", "1", "--seeds", "33", "500",
        "--references", "my_refs", "--output-dir", out,
        "--register", "my_refs", "refs.json", "images/", "--", "MODEL.REFSEG.NMS_THRESH", "0.6"])
    assert args.register == [["my_refs", "refs.json", "images/"]]
    try:
        cfg = sweep.load_config(args)
    finally:
        unregister("my_refs")
    assert cfg.MODEL.REFSEG.NMS_THRESH == 0.6
    runs = sweep.plan_runs(args, list(cfg.DATASETS.REFERENCE))
    assert [(k, seed, os.path.basename(d), names) for k, seed, d, names in runs] == [
        (1, 33, "1shot_seed33", ["coco_fsod_train_novel_1shot_seed33"]),
        (1, 500, "1shot_seed500", ["coco_fsod_train_novel_1shot_seed500"]),
        (None, None, "my_refs", ["my_refs"]),
    ]
    assert "coco_fsod_train_novel_1shot_seed500" not in DatasetCatalog.list()   # resolved later
    args.references = ["1shot_seed33"]
    with pytest.raises(ValueError, match="Runs named twice"):
        sweep.plan_runs(args, list(cfg.DATASETS.REFERENCE))
    for bad in (["--seeds", "1"], []):
        with pytest.raises(SystemExit):
            sweep.parse_args(["--config-file", COCO_FSOD, "--output-dir", out] + bad)


def test_sweep_reference_names():
    names = sweep.reference_names(["coco_fsod_train_novel_5shot_seed42"], 10, 33)
    assert names == ["coco_fsod_train_novel_10shot_seed33"]
    names = sweep.reference_names(["cdfsod_dior_1shot_with_segm"], 10, None)
    assert names == ["cdfsod_dior_10shot_with_segm"]
    names = sweep.reference_names(["voc_tfa_split2_novel_1shot_seed0"], 3, 7)
    assert names == ["voc_tfa_split2_novel_3shot_seed7"]
    with pytest.raises(ValueError, match="has no '_seed<S>'"):
        sweep.reference_names(["cdfsod_dior_1shot"], 1, 5)


def test_coco_fsod_sweep_end_to_end_with_the_tiny_model(random_weights, tmp_path):
    register_under(tmp_path / "data")
    make_coco_tree(str(tmp_path / "data"), per_class=2, images=True)
    sam2, dinov2 = random_weights
    out = str(tmp_path / "sweep")
    sweep.main([
        "--config-file", TINY_CONFIG, "--shots", "1", "--seeds", "0", "1", "--output-dir", out,
        "DATASETS.REFERENCE", '("coco_fsod_train_novel_1shot_seed0",)',
        "DATASETS.TEST", '("coco_fsod_val_novel",)',
        "MODEL.REFSEG.SAM2.WEIGHTS", sam2, "MODEL.REFSEG.ENCODER.WEIGHTS", dinov2,
    ])
    for seed in (0, 1):
        run = os.path.join(out, "1shot_seed{}".format(seed))
        with open(os.path.join(run, "metrics.json")) as f:
            metrics = json.load(f)
        assert set(metrics) == {"bbox", "segm"}
        assert len([k for k in metrics["bbox"] if k.startswith("AP-")]) == 20
        assert os.path.isfile(os.path.join(run, "inference", "coco_fsod_val_novel",
                                           "coco_instances_results.json"))
    assert "bbox/AP" in open(os.path.join(out, "results.md")).read()


def test_voc_split_runs_with_box_only_references_and_reports_both_metrics(random_weights, tmp_path):
    import train_net

    register_under(tmp_path / "data")
    test = {"000010": [("bird", 0, (11, 21, 60, 80)), ("bus", 0, (30, 90, 90, 140)),
                       ("cow", 1, (120, 95, 190, 145)), ("cow", 0, (100, 10, 180, 60))],
            "000011": [("motorbike", 0, (100, 20, 160, 80)), ("sofa", 0, (20, 90, 90, 140))]}
    make_voc_tree(str(tmp_path / "data"), test_objects=test, images=True)
    sam2, dinov2 = random_weights
    args = train_net.get_parser().parse_args([
        "--config-file", TINY_CONFIG, "--eval-only",
        "DATASETS.REFERENCE", '("voc_fewshot_split1_trainval_novel_1shot_seed33",)',
        "DATASETS.TEST", '("voc_2007_test_novel1",)', "OUTPUT_DIR", str(tmp_path / "out"),
        "MODEL.REFSEG.SAM2.WEIGHTS", sam2, "MODEL.REFSEG.ENCODER.WEIGHTS", dinov2,
        "MODEL.REFSEG.MEMORY.BOX_MASK_SOURCE", "box",   # random SAM 2 masks may miss every patch
    ])
    metrics = train_net.main(args)
    assert set(metrics) == {"bbox", "voc07_bbox"}
    assert "AP50-sofa" in metrics["voc07_bbox"]


def test_cdfsod_run_fills_the_authors_references_and_evaluates_annotated_test_images(
        random_weights, tmp_path):
    import torch
    import train_net

    register_under(tmp_path / "data")
    classes = ("seacucumber", "seaurchin", "scallop")
    base = make_cdfsod_tree(str(tmp_path / "data"), "uodd")
    # seacucumber: two in image 1 (-> the first one twice) and one in image 2; seaurchin: one;
    # scallop: two images. (annotation id, image id, category id)
    _write_cdfsod_file(base, "5_shot.json", [1, 2, 3],
                       [(1, 1, 1), (2, 1, 1), (3, 2, 1), (4, 2, 2), (5, 3, 3), (6, 1, 3)], classes)
    _write_cdfsod_file(base, "test.json", [1, 2, 3], [(1, 1, 1), (2, 2, 2)], classes)
    for i in (1, 2, 3):
        _write_png(os.path.join(base, "train", "{}.jpg".format(i)), i, size=(50, 40))
        _write_png(os.path.join(base, "test", "{}.jpg".format(i)), 10 + i, size=(50, 40))
    sam2, dinov2 = random_weights

    def run(reference, test, out):
        args = train_net.get_parser().parse_args([
            "--config-file", TINY_CONFIG, "--eval-only",
            "DATASETS.REFERENCE", '("{}",)'.format(reference),
            "DATASETS.TEST", '("{}",)'.format(test),
            "OUTPUT_DIR", str(tmp_path / out),
            "MODEL.REFSEG.SAM2.WEIGHTS", sam2, "MODEL.REFSEG.ENCODER.WEIGHTS", dinov2,
            "MODEL.REFSEG.MEMORY.BOX_MASK_SOURCE", "box",
        ])
        metrics = train_net.main(args)
        memory = torch.load(str(tmp_path / out / "refseg_memory.pth"), weights_only=False)
        path = tmp_path / out / "inference" / test / "instances_predictions.pth"
        predictions = torch.load(str(path), weights_only=False)
        images = sorted(p["image_id"] for p in predictions)
        return metrics, memory["model"]["memory.counts"].tolist(), images

    metrics, counts, images = run("cdfsod_uodd_5shot", "cdfsod_uodd_test", "authors")
    assert set(metrics) == {"bbox"} and counts == [5, 5, 5]
    assert images == [1, 2]                       # image 3 has no annotation: not evaluated
    _, counts, images = run("cdfsod_uodd_5shot_all_instances", "cdfsod_uodd_test_all_images",
                            "all")
    assert counts == [3, 1, 2] and images == [1, 2, 3]


def _box_only(synthetic_split, tmp_path):
    with open(synthetic_split[0]) as f:
        data = json.load(f)
    for ann in data["annotations"]:
        ann.pop("segmentation", None)
    path = tmp_path / "boxes.json"
    path.write_text(json.dumps(data))
    return str(path), data


def test_add_sam2_masks_resumes_and_writes_atomically(random_weights, synthetic, tmp_path):
    src, data = _box_only(synthetic["targets"], tmp_path)
    base = ["--config-file", TINY_CONFIG, "--input", src, "--image-root", synthetic["targets"][1],
            "--box-batch", "2", "--mask-format", "rle"]
    opts = ["MODEL.REFSEG.SAM2.WEIGHTS", random_weights[0]]
    out = str(tmp_path / "boxes_with_segm.json")
    stats = add_sam2_masks.main(base + ["--max-images", "2"] + opts)   # "interrupted"
    assert stats["images"] == 2 and stats["remaining"] == 2
    assert not os.path.exists(out) and os.path.exists(out + ".partial")
    stats = add_sam2_masks.main(base + opts)                           # resumed
    assert stats["images"] == 2 and stats["remaining"] == 0
    assert not os.path.exists(out + ".partial")
    with open(out) as f:
        resumed = json.load(f)
    straight = str(tmp_path / "straight.json")
    add_sam2_masks.main(base + ["--output", straight] + opts)
    with open(straight) as f:
        once = json.load(f)
    assert resumed["annotations"] == once["annotations"]
    assert resumed["images"] == data["images"]
    import pycocotools.mask as mask_util

    for ann in resumed["annotations"]:
        rle = ann["segmentation"]
        assert rle["size"] == [96, 128] and ann["area"] == float(mask_util.area(rle)) > 0
    assert resumed["info"]["refseg_sam2_masks"]["masks"] == len(data["annotations"])


def test_sam2_masks_become_the_authors_external_contour_polygons():
    ring = np.zeros((10, 12), dtype=bool)
    ring[2:6, 3:8] = True
    ring[3:5, 5] = False                 # a hole: lost, as in the authors' polygons
    segm, area, fell_back = encode_mask(ring, [3, 2, 5, 4])
    assert segm == [[3, 2, 3, 5, 7, 5, 7, 2]] and area == 18.0 and not fell_back
    # contours of one or two points are dropped; nothing left -> the box polygon, area of SAM's
    specks = np.zeros((10, 12), dtype=bool)
    specks[1, 1] = True
    specks[7, 2:5] = True
    segm, area, fell_back = encode_mask(specks, [1, 1, 4, 7])
    assert segm == [[1, 1, 5, 1, 5, 8, 1, 8]] and area == 4.0 and fell_back
    # rle keeps the hole; an empty mask becomes the box rectangle
    import pycocotools.mask as mask_util

    rle, area, _ = encode_mask(ring, [3, 2, 5, 4], "rle")
    assert (mask_util.decode(rle).astype(bool) == ring).all() and area == 18.0
    rle, area, fell_back = encode_mask(np.zeros((10, 12), bool), [3, 2, 5, 4], "rle")
    assert fell_back and area == 20.0 and mask_util.decode(rle)[2:6, 3:8].all()


def test_add_sam2_masks_on_a_registered_dataset_writes_where_the_with_segm_names_look(tmp_path):
    register_under(tmp_path)
    make_voc_tree(str(tmp_path))
    args = add_sam2_masks.parse_args(
        ["--config-file", TINY_CONFIG, "--dataset", "voc_2007_test_all"])
    json_file, image_root, output = add_sam2_masks.resolve_source(args)
    assert os.path.isfile(json_file) and image_root == str(tmp_path)
    assert output == os.path.join(str(tmp_path), "VOC2007", "voc07_test_with_segm.json")
