"""Test loader and evaluator choice: missing images fail early; COCO bbox + segm."""
import json

import pytest

from common import register, tiny_cfg

from refseg_d2 import RefSegTrainer


def test_coco_evaluator_evaluates_bbox_and_segm(synthetic, random_weights, tmp_path):
    name = register("eval_targets", synthetic["targets"])
    evaluator = RefSegTrainer.build_evaluator(tiny_cfg(random_weights, tmp_path), name)
    assert set(evaluator._tasks) == {"bbox", "segm"}
    assert evaluator._max_dets_per_image == [1, 10, 100]


def test_ground_truth_without_masks_is_evaluated_on_boxes_only(synthetic, random_weights, tmp_path):
    with open(synthetic["targets"][0]) as f:
        data = json.load(f)
    for ann in data["annotations"]:
        ann.pop("segmentation", None)
    path = tmp_path / "boxes_only.json"
    path.write_text(json.dumps(data))
    name = register("eval_boxes_only", (str(path), synthetic["targets"][1]))
    evaluator = RefSegTrainer.build_evaluator(tiny_cfg(random_weights, tmp_path), name)
    assert evaluator._tasks == ("bbox",)


def test_missing_test_images_fail_before_inference_and_are_listed(synthetic, random_weights, tmp_path):
    with open(synthetic["targets"][0]) as f:
        data = json.load(f)
    data["images"][1]["file_name"] = "gone.png"
    path = tmp_path / "missing.json"
    path.write_text(json.dumps(data))
    name = register("eval_missing", (str(path), synthetic["targets"][1]))
    with pytest.raises(FileNotFoundError, match="gone.png"):
        RefSegTrainer.build_test_loader(tiny_cfg(random_weights, tmp_path), name)
