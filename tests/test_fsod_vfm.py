"""
FSOD-VFM's pipeline (configs/fsod_vfm/): the formulas with hand-computed expectations, SAM 2's
image-predictor interface against SAM2ImagePredictor itself, and end-to-end runs through
tools/train_net.py from a boxes file and from a Detectron2 detector.
"""
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
from common import REPO
from PIL import Image

from refseg_d2.modeling import ops
from refseg_d2.modeling.dedup import graph_diffusion
from refseg_d2.modeling.pooling import fsod_vfm_resize
from refseg_d2.modeling.proposals.sources import load_boxes_file, select_boxes

FSOD_TINY = os.path.join(REPO, "configs", "quick_schedules", "fsod_vfm_tiny_cpu.yaml")
SMALL = ["MODEL.REFSEG.SAM2.INPUT_SIZE", "256", "MODEL.REFSEG.ENCODER.INPUT_SIZE", "112"]


@pytest.fixture(scope="module")
def sam21_weights(tmp_path_factory):
    from refseg_d2.testing.random_weights import write_random_checkpoints

    out = tmp_path_factory.mktemp("weights21")
    return write_random_checkpoints(str(out), "configs/sam2.1/sam2.1_hiera_t.yaml",
                                    "dinov2_vits14", sam2_input_size=256, seed=0)


def test_select_boxes_truncates_orders_by_rounded_score_then_clips():
    boxes = torch.tensor([
        [-0.56, 1.9, 10.7, 20.2],     # truncation toward zero: (0, 1, 10, 20)
        [5.0, 5.0, 50.0, 50.0],       # clipped to the 40 x 30 image after the top-k
        [1.0, 1.0, 3.0, 3.0],
        [45.0, 2.0, 60.0, 9.0],       # empty once clipped: dropped, not replaced
        [2.0, 2.0, 4.0, 4.0],         # score below MIN_SCORE
    ], dtype=torch.float64)
    scores = torch.tensor([0.501, 0.504, 0.7, 0.9, 0.005], dtype=torch.float64)
    out, kept = select_boxes(boxes, scores, width=40, height=30, min_score=0.01, max_boxes=3)
    # rounded scores: 0.5, 0.5, 0.7, 0.9 -> order 3, 2, then 1 before 0 (0.504 > 0.501);
    # the top 3 are 3, 2, 1; box 3 is empty after clipping.
    assert out.tolist() == [[1.0, 1.0, 3.0, 3.0], [5.0, 5.0, 40.0, 30.0]]
    assert kept.tolist() == pytest.approx([0.7, 0.504])


def test_select_boxes_keeps_input_order_on_equal_scores():
    boxes = torch.tensor([[0, 0, 5, 5], [1, 1, 6, 6], [2, 2, 7, 7]], dtype=torch.float64)
    out, _ = select_boxes(boxes, torch.tensor([0.3, 0.3, 0.3]), 10, 10)
    assert out[:, 0].tolist() == [0.0, 1.0, 2.0]


def _three_masks():
    m = torch.tensor([[1, 1, 1, 1, 0, 0],
                      [1, 1, 0, 0, 0, 0],
                      [0, 0, 0, 1, 1, 0]], dtype=torch.bool)
    return m, ops.dense_self_overlaps(m)


def test_graph_diffusion_hand_computed():
    # A = [[0, 0, 0], [1, 0, 0], [0.5, 0, 0]], v = (0, 1, 0.5); from pi = 1/3:
    # step 1 pi = (0, 0.8, 0.4), step 2 (0, 0.7, 0.35), step 3 unchanged -> stop.
    masks, overlaps = _three_masks()
    scores = torch.tensor([0.9, 0.8, 0.6])
    out = graph_diffusion(overlaps, torch.zeros(3, dtype=torch.long), scores, alpha=0.3)
    expected = [0.9, 0.8 * np.sqrt(0.3), 0.6 * np.sqrt(0.65)]
    assert out.tolist() == pytest.approx(expected, rel=1e-6)
    assert out.dtype == torch.float32


def test_graph_diffusion_with_alpha_zero_is_soft_merging_without_the_semantic_factor():
    masks, overlaps = _three_masks()
    scores, labels = torch.tensor([0.9, 0.8, 0.6]), torch.zeros(3, dtype=torch.long)
    same_feature = torch.nn.functional.normalize(torch.ones(3, 4), dim=1)
    merged = ops.semantic_soft_merge_overlaps(overlaps, labels, same_feature, scores, 0.5)
    diffused = graph_diffusion(overlaps, labels, scores, alpha=0.0)
    assert diffused.tolist() == pytest.approx(merged.tolist(), rel=1e-6)
    assert diffused.tolist() == pytest.approx([0.9, 0.0, 0.6 * np.sqrt(0.5)], abs=1e-7)


def test_graph_diffusion_alone_in_class_and_zero_steps():
    masks, overlaps = _three_masks()
    scores = torch.tensor([0.9, 0.8, 0.6])
    labels = torch.tensor([0, 1, 2])
    assert graph_diffusion(overlaps, labels, scores).tolist() == pytest.approx(scores.tolist())
    # The authors' code with 0 steps leaves pi = 1/n: a mask alone in its class gets score 0.
    assert graph_diffusion(overlaps, labels, scores, steps=0).tolist() == [0.0, 0.0, 0.0]
    one = graph_diffusion(overlaps, torch.tensor([0]), scores[:1], steps=0)
    assert one.tolist() == pytest.approx([0.9])


def test_graph_diffusion_row_normalisation_divides_rows_by_their_sums():
    # Three equal masks: A = [[0, 0, 0], [1, 0, 0], [1, 1, 0]], v = (0, 1, 1). One step from
    # pi = 1/3: as the authors' code (no division) pi_2 = 0.3 * 2/3 + 0.7 = 0.9; with rows
    # divided by their sums pi_2 = 0.3 * 1/3 + 0.7 = 0.8.
    overlaps = ops.dense_self_overlaps(torch.ones((3, 4), dtype=torch.bool))
    scores, labels = torch.ones(3), torch.zeros(3, dtype=torch.long)
    raw = graph_diffusion(overlaps, labels, scores, steps=1)
    norm = graph_diffusion(overlaps, labels, scores, steps=1, row_normalize=True)
    assert raw[2].item() == pytest.approx(np.sqrt(0.1), rel=1e-5)
    assert norm[2].item() == pytest.approx(np.sqrt(0.2), rel=1e-5)


@pytest.mark.parametrize("size", [(480, 640), (90, 90), (45, 45), (20, 30), (37, 1000),
                                  (999, 1000), (91, 90)])
def test_linear_resize_masks_equals_cv2_resize_above_half(size):
    rng = np.random.RandomState(sum(size))
    masks = np.zeros((3,) + size, dtype=bool)
    yy, xx = np.ogrid[: size[0], : size[1]]
    masks[0] = (yy - size[0] / 3) ** 2 + (xx - size[1] / 2) ** 2 < (min(size) / 3) ** 2
    masks[1] = rng.rand(*size) > 0.5
    masks[2, : size[0] // 2, size[1] // 3 :] = True
    ours = ops.linear_resize_masks(torch.from_numpy(masks), (45, 45)).numpy()
    for m, o in zip(masks, ours):
        assert np.array_equal(cv2.resize(m.astype(np.float32), (45, 45)) > 0.5, o)


def test_fsod_vfm_resize_floors_the_long_side_resize_to_patches_then_squashes():
    rng = np.random.RandomState(0)
    image = Image.fromarray(rng.randint(0, 255, (480, 640, 3), dtype=np.uint8))
    step = image.resize((630, 462), Image.BICUBIC)   # 630 / (640 / 480) = 472.5 -> 472 -> 462
    expected = np.asarray(step.resize((630, 630), Image.BICUBIC))
    assert np.array_equal(fsod_vfm_resize(image, 630, 14).permute(1, 2, 0).numpy(), expected)
    tall = Image.fromarray(rng.randint(0, 255, (50, 7, 3), dtype=np.uint8))
    first = tall.resize((14, 56), Image.BICUBIC)     # 56 * 7 / 50 = 7.84 -> 7 -> one patch
    assert np.array_equal(fsod_vfm_resize(tall, 56, 14).permute(1, 2, 0).numpy(),
                          np.asarray(first.resize((56, 56), Image.BICUBIC)))


def test_boxes_file_errors_name_the_file_and_entry(tmp_path):
    path = tmp_path / "boxes.json"
    path.write_text(json.dumps([{"image_id": 1, "bbox": [0, 0, 4, 4], "score": 0.5},
                                {"image_id": 2, "box": [0, 0, 4, 4], "score": 0.5}]))
    with pytest.raises(ValueError, match=r"Entry 1 of .*boxes.json"):
        load_boxes_file(str(path))
    path.write_text(json.dumps({"image_id": 1}))
    with pytest.raises(ValueError, match="not a COCO results file"):
        load_boxes_file(str(path))
    path.write_text(json.dumps([{"image_id": 3, "bbox": [1.5, 2, 4, 5], "score": 0.5}]))
    boxes, scores = load_boxes_file(str(path))[3]
    assert boxes.tolist() == [[1.5, 2.0, 5.5, 7.0]] and scores.tolist() == [0.5]


def test_encoder_without_final_norm_gives_the_last_block_tokens():
    from refseg_d2.modeling.encoders import DinoV2Encoder

    enc = DinoV2Encoder("dinov2_vits14", "", 56, random_init=True, final_norm=False)
    images = torch.rand(2, 3, 56, 56)
    x = (images - enc.pixel_mean) / enc.pixel_std
    with torch.no_grad():
        pre = enc.backbone.forward_features(x)["x_prenorm"][:, 1:]
        out = enc(images)
    assert torch.allclose(out, pre.transpose(1, 2).reshape(2, -1, 4, 4), atol=1e-6)
    assert enc.signature()["final_norm"] is False


@pytest.mark.parametrize("decoder", ["official", "shared"])
def test_image_predictor_interface_gives_sam2_image_predictor_masks(sam21_weights, decoder):
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    from refseg_d2.modeling.memory.encoding import masks_from_boxes
    from refseg_d2.modeling.proposals import SAM2Prompter, build_sam2_model

    # SAM2ImagePredictor assumes the official 1024 input (its feature sizes are fixed)
    sam = build_sam2_model("configs/sam2.1/sam2.1_hiera_t.yaml", sam21_weights[0], 1024)
    prompter = SAM2Prompter(sam, 4, 16, 0.0, decoder=decoder, interface="image_predictor")
    rng = np.random.RandomState(1)
    image = rng.randint(0, 255, (90, 130, 3), dtype=np.uint8)
    boxes = np.array([[10.0, 5.0, 70.0, 60.0], [40.5, 20.2, 128.0, 88.0], [0, 0, 129, 89]])
    predictor = SAM2ImagePredictor(sam)
    with torch.no_grad():
        predictor.set_image(image)
        expected, _, _ = predictor.predict(box=boxes, multimask_output=False)
        ours = masks_from_boxes(prompter, torch.from_numpy(image).permute(2, 0, 1),
                                torch.from_numpy(boxes).float(), (90, 130))
    differ = (ours.numpy() != (expected[:, 0] > 0)).sum()
    assert differ <= (0 if decoder == "official" else 3), differ


def _write_boxes(targets_json, path, seed=0):
    """Jittered ground-truth boxes plus one box partly outside each image."""
    with open(targets_json) as f:
        data = json.load(f)
    rng = np.random.RandomState(seed)
    out = []
    for a in data["annotations"]:
        x, y, w, h = a["bbox"]
        out.append({"image_id": a["image_id"], "bbox": [x - 1.7, y + 0.6, w + 2.5, h + 1.2],
                    "score": float(rng.uniform(0.2, 1.0))})
    for im in data["images"]:
        out.append({"image_id": im["id"], "bbox": [-5.5, 10.2, 60.7, 40.1], "score": 0.5})
        out.append({"image_id": im["id"], "bbox": [1, 1, 5, 5], "score": 0.004})
    with open(path, "w") as f:
        json.dump(out, f)
    return out


def _run(config, sam21_weights, synthetic, out_dir, *opts):
    sam2, dinov2 = sam21_weights
    cmd = [sys.executable, os.path.join(REPO, "tools", "train_net.py"), "--eval-only",
           "--no-report", "--config-file", config,
           "--register", "fv_refs", *synthetic["refs_boxes"],
           "--register", "fv_targets", *synthetic["targets"],
           "DATASETS.REFERENCE", '("fv_refs",)', "DATASETS.TEST", '("fv_targets",)',
           "MODEL.REFSEG.SAM2.WEIGHTS", sam2, "MODEL.REFSEG.ENCODER.WEIGHTS", dinov2,
           "OUTPUT_DIR", str(out_dir), *SMALL, *opts]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900)
    return proc.returncode, proc.stdout + proc.stderr


def _predictions(out_dir):
    path = os.path.join(str(out_dir), "inference", "fv_targets", "coco_instances_results.json")
    with open(path) as f:
        return json.load(f)


def test_train_net_fsod_vfm_from_a_boxes_file(sam21_weights, synthetic, tmp_path):
    boxes = _write_boxes(synthetic["targets"][0], tmp_path / "boxes.json")
    code, log = _run(FSOD_TINY, sam21_weights, synthetic, tmp_path / "out",
                     "MODEL.REFSEG.PROPOSALS.BOXES_FILE", str(tmp_path / "boxes.json"))
    assert code == 0, log[-4000:]
    preds = _predictions(tmp_path / "out")
    with open(os.path.join(str(tmp_path / "out"), "metrics.json")) as f:
        metrics = json.load(f)
    assert {"bbox", "segm"} <= set(metrics)
    by_image = {}
    for p in preds:
        by_image.setdefault(p["image_id"], []).append(p)
    with open(synthetic["targets"][0]) as f:
        images = {im["id"]: im for im in json.load(f)["images"]}
    for image_id, found in by_image.items():
        width, height = images[image_id]["width"], images[image_id]["height"]
        given = [b for b in boxes if b["image_id"] == image_id and b["score"] >= 0.01]
        expected, _ = select_boxes(
            torch.tensor([[b["bbox"][0], b["bbox"][1], b["bbox"][0] + b["bbox"][2],
                           b["bbox"][1] + b["bbox"][3]] for b in given], dtype=torch.float64),
            torch.tensor([b["score"] for b in given]), width, height)
        # every selected box becomes exactly one detection, its box the integral proposal box
        assert len(found) == len(expected)
        xywh = sorted(tuple(p["bbox"]) for p in found)
        assert xywh == sorted((x0, y0, x1 - x0, y1 - y0) for x0, y0, x1, y1 in expected.tolist())
        assert all("segmentation" in p for p in found)
    assert set(by_image) == set(images)


def test_train_net_names_the_image_missing_from_the_boxes_file(sam21_weights, synthetic,
                                                                tmp_path):
    boxes = _write_boxes(synthetic["targets"][0], tmp_path / "boxes.json")
    missing = boxes[0]["image_id"]
    with open(tmp_path / "boxes.json", "w") as f:
        json.dump([b for b in boxes if b["image_id"] != missing] +
                  [{"image_id": 99999, "bbox": [0, 0, 3, 3], "score": 0.9}], f)
    code, log = _run(FSOD_TINY, sam21_weights, synthetic, tmp_path / "out",
                     "MODEL.REFSEG.PROPOSALS.BOXES_FILE", str(tmp_path / "boxes.json"))
    assert code != 0
    assert "has no box for image_id {}".format(missing) in log
    assert "Per-stage time" not in log and "Filling the memory" not in log


def test_train_net_gives_no_detection_for_an_image_whose_boxes_are_all_below_min_score(
        sam21_weights, synthetic, tmp_path):
    boxes = _write_boxes(synthetic["targets"][0], tmp_path / "boxes.json")
    low = boxes[0]["image_id"]
    for b in boxes:
        if b["image_id"] == low:
            b["score"] = 0.001
    with open(tmp_path / "boxes.json", "w") as f:
        json.dump(boxes, f)
    code, log = _run(FSOD_TINY, sam21_weights, synthetic, tmp_path / "out",
                     "MODEL.REFSEG.PROPOSALS.BOXES_FILE", str(tmp_path / "boxes.json"))
    assert code == 0, log[-4000:]
    found = {p["image_id"] for p in _predictions(tmp_path / "out")}
    assert low not in found and found


def test_train_net_detector_source_with_a_random_model_zoo_faster_rcnn(sam21_weights, synthetic,
                                                                       tmp_path):
    code, log = _run(FSOD_TINY, sam21_weights, synthetic, tmp_path / "out",
                     "MODEL.REFSEG.PROPOSALS.SOURCE", "detector",
                     "MODEL.REFSEG.PROPOSALS.DETECTOR.CONFIG",
                     "COCO-Detection/faster_rcnn_R_50_FPN_1x.yaml",
                     "MODEL.REFSEG.PROPOSALS.DETECTOR.OUTPUT", "proposals",
                     "MODEL.REFSEG.RANDOM_INIT", "True")
    assert code == 0, log[-4000:]
    preds = _predictions(tmp_path / "out")
    assert preds and all(float(v).is_integer() for p in preds for v in p["bbox"])
    assert "proposal detector" in log and "RANDOMLY INITIALISED" in log


def test_a_random_proposal_detector_is_the_same_in_every_build():
    """RANDOM_INIT builds the detector under a fixed seed: two builds give the same boxes."""
    from refseg_d2.modeling.proposals.detector import BoxDetector

    image = torch.randint(0, 256, (3, 40, 56), dtype=torch.uint8,
                          generator=torch.Generator().manual_seed(0))
    torch.manual_seed(1)
    first = BoxDetector("COCO-Detection/faster_rcnn_R_50_FPN_1x.yaml", "", "proposals",
                        random_init=True)({"image": image}, (40, 56))
    torch.manual_seed(2)
    second = BoxDetector("COCO-Detection/faster_rcnn_R_50_FPN_1x.yaml", "", "proposals",
                         random_init=True)({"image": image}, (40, 56))
    assert len(first[0]) > 0
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])


@pytest.mark.parametrize("masks", ["pooling", "full"])
def test_graph_diffusion_replaces_soft_merging_in_the_point_pipeline(random_weights, synthetic,
                                                                      tmp_path, masks):
    from test_train_net import predictions, run_train_net

    diffused, _ = run_train_net(random_weights, synthetic, tmp_path / "gd", "--eval-only",
                                "--no-report", "MODEL.REFSEG.DEDUP.NAME", "graph_diffusion",
                                "MODEL.REFSEG.DEDUP.MASKS", masks, "MODEL.REFSEG.NMS_THRESH", "1.0")
    merged, _ = run_train_net(random_weights, synthetic, tmp_path / "sm", "--eval-only",
                              "--no-report", "MODEL.REFSEG.NMS_THRESH", "1.0")
    a, b = predictions(tmp_path / "gd"), predictions(tmp_path / "sm")
    # the same proposals (pooling-grid masks also keep those empty at full size), other decays
    assert len(a) == len(b) if masks == "full" else len(a) >= len(b)
    assert sorted(p["score"] for p in a) != pytest.approx(sorted(p["score"] for p in b))


def test_predictor_prompts_the_boxes_it_is_given(sam21_weights, synthetic):
    from detectron2.config import get_cfg

    from refseg_d2 import add_refseg_config
    from refseg_d2.predictor import RefSegPredictor

    cfg = get_cfg()
    add_refseg_config(cfg)
    cfg.merge_from_file(FSOD_TINY)
    cfg.merge_from_list(["MODEL.REFSEG.SAM2.WEIGHTS", sam21_weights[0],
                         "MODEL.REFSEG.ENCODER.WEIGHTS", sam21_weights[1], *SMALL])
    predictor = RefSegPredictor(cfg)
    with open(synthetic["refs"][0]) as f:
        ref = json.load(f)
    first = ref["images"][0]
    anns = [a for a in ref["annotations"] if a["image_id"] == first["id"]]
    path = os.path.join(synthetic["refs"][1], first["file_name"])
    xyxy = [[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
            for a in anns]
    predictor.add_references(path, ["c{}".format(a["category_id"]) for a in anns], boxes=xyxy)
    boxes = [[-3.2, 4.9, 30.6, 40.0], [10, 10, 60, 50], [200, 10, 300, 40]]
    out = predictor(path, boxes=boxes, scores=[0.9, 0.8, 0.7])["instances"]
    # the third box lies outside the image and is dropped; the others keep their integral box
    assert sorted(out.pred_boxes.tensor.tolist()) == [[0.0, 4.0, 30.0, 40.0],
                                                      [10.0, 10.0, 60.0, 50.0]]
    assert out.pred_masks.shape[1:] == (first["height"], first["width"])
    with pytest.raises(ValueError, match="3 boxes but 2 scores"):
        predictor(path, boxes=boxes, scores=[0.9, 0.8])


def test_support_file_maps_class_names_to_the_test_set_ids(synthetic, tmp_path):
    from detectron2.data import DatasetCatalog, MetadataCatalog

    from refseg_d2.data.datasets.fsod_vfm import load_support_file, test_categories
    from refseg_d2.engine.memory_filling import dataset_classes

    from common import register

    test = register("fv_support_test", synthetic["targets"])
    categories = test_categories(test)
    assert categories == {3: "red_square", 7: "green_disc", 12: "blue_triangle"}
    support = tmp_path / "support.json"
    support.write_text(json.dumps({
        "blue_triangle": [{"image": "a.png", "bbox": [1, 2, 3, 4]}],
        "red_square": [{"image": "b.png", "bbox": [5, 6, 7, 8]},
                       {"image": "a.png", "bbox": [0.5, 1, 2, 2]}],
    }))
    name = "fv_support_refs"
    DatasetCatalog.register(name, lambda: load_support_file(str(support), "root", categories, name))
    try:
        dicts = DatasetCatalog.get(name)
        assert [d["file_name"] for d in dicts] == [os.path.join("root", "a.png"),
                                                    os.path.join("root", "b.png")]
        # contiguous ids in category-id order: red_square 0, green_disc 1, blue_triangle 2
        assert [a["category_id"] for a in dicts[0]["annotations"]] == [2, 0]
        assert dicts[0]["annotations"][1]["bbox"] == [0.5, 1.0, 2.0, 2.0]
        assert dataset_classes(name) == ([3, 7, 12], ["red_square", "green_disc",
                                                      "blue_triangle"])
        support.write_text(json.dumps({"zebra": []}))
        with pytest.raises(ValueError, match=r"classes \['zebra'\] are not categories"):
            load_support_file(str(support), "root", categories, name)
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def test_sweep_demo_and_report_run_the_box_pipeline(sam21_weights, synthetic, tmp_path):
    sam2, dinov2 = sam21_weights
    weights = ["MODEL.REFSEG.SAM2.WEIGHTS", sam2, "MODEL.REFSEG.ENCODER.WEIGHTS", dinov2, *SMALL]
    boxes = _write_boxes(synthetic["targets"][0], tmp_path / "boxes.json")
    with open(synthetic["targets"][0]) as f:
        images = json.load(f)["images"]
    # the demo numbers its inputs 1..N: renumber the boxes of the first two images
    files = [os.path.join(synthetic["targets"][1], im["file_name"]) for im in images[:2]]
    demo_boxes = [dict(b, image_id=i + 1) for i, im in enumerate(images[:2])
                  for b in boxes if b["image_id"] == im["id"]]
    (tmp_path / "demo_boxes.json").write_text(json.dumps(demo_boxes))
    demo = subprocess.run(
        [sys.executable, os.path.join(REPO, "tools", "demo.py"), "--config-file", FSOD_TINY,
         "--ref-coco", *synthetic["refs"], "--input", *files, "--output", str(tmp_path / "demo"),
         "--boxes", str(tmp_path / "demo_boxes.json"), "--", *weights],
        cwd=REPO, capture_output=True, text=True, timeout=900)
    assert demo.returncode == 0, (demo.stdout + demo.stderr)[-4000:]
    with open(tmp_path / "demo" / "coco_instances_results.json") as f:
        found = json.load(f)
    assert {r["image_id"] for r in found} == {1, 2}
    sweep = subprocess.run(
        [sys.executable, os.path.join(REPO, "tools", "sweep.py"), "--config-file", FSOD_TINY,
         "--register", "fv_sweep_a", *synthetic["refs_boxes"],
         "--register", "fv_sweep_b", *synthetic["refs"],
         "--register", "fv_sweep_targets", *synthetic["targets"],
         "--output-dir", str(tmp_path / "sweep"), "--references", "fv_sweep_a", "fv_sweep_b",
         "--", "DATASETS.TEST", '("fv_sweep_targets",)',
         "MODEL.REFSEG.PROPOSALS.BOXES_FILE", str(tmp_path / "boxes.json"), *weights],
        cwd=REPO, capture_output=True, text=True, timeout=900)
    assert sweep.returncode == 0, (sweep.stdout + sweep.stderr)[-4000:]
    assert len([p for p in (tmp_path / "sweep").rglob("metrics.json")]) == 2
    assert len([p for p in (tmp_path / "sweep").rglob("report.html")]) == 2
    code, log = _run(FSOD_TINY, sam21_weights, synthetic, tmp_path / "run",
                     "MODEL.REFSEG.PROPOSALS.BOXES_FILE", str(tmp_path / "boxes.json"))
    assert code == 0, log[-4000:]
