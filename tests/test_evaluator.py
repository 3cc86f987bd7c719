"""Test loader and evaluator choice: missing images fail early; COCO bbox + segm."""
import pytest
from common import register, register_edited, tiny_cfg

from refseg_d2 import RefSegTrainer


def test_coco_evaluator_evaluates_bbox_and_segm(synthetic, random_weights, tmp_path):
    name = register("eval_targets", synthetic["targets"])
    evaluator = RefSegTrainer.build_evaluator(tiny_cfg(random_weights, tmp_path), name)
    assert set(evaluator._tasks) == {"bbox", "segm"}
    assert evaluator._max_dets_per_image == [1, 10, 100]


def test_ground_truth_without_masks_is_evaluated_on_boxes_only(synthetic, random_weights, tmp_path):
    def drop_masks(data):
        for ann in data["annotations"]:
            ann.pop("segmentation", None)

    name = register_edited("eval_boxes_only", synthetic["targets"], tmp_path, drop_masks)
    evaluator = RefSegTrainer.build_evaluator(tiny_cfg(random_weights, tmp_path), name)
    assert evaluator._tasks == ("bbox",)


def test_missing_test_images_fail_before_inference_and_are_listed(synthetic, random_weights, tmp_path):
    def lose_an_image(data):
        data["images"][1]["file_name"] = "gone.png"

    name = register_edited("eval_missing", synthetic["targets"], tmp_path, lose_an_image)
    with pytest.raises(FileNotFoundError, match="gone.png"):
        RefSegTrainer.build_test_loader(tiny_cfg(random_weights, tmp_path), name)
