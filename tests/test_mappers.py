"""Target and reference mappers: preprocessing as the reference does it, bad-input handling."""
import numpy as np
import pytest
import torch
from PIL import Image

from refseg_d2.data.mappers import (
    RefSegReferenceMapper,
    RefSegTargetMapper,
    context_crop_window,
)


def test_context_crop_window_hand_example():
    # box corners truncated: (10, 20, 41, 30) -> w 31, h 10; centre (25.5, 25); side 37.2
    assert context_crop_window([10.7, 20.2, 30.5, 10.0], 100, 80, 0.2) == (6, 6, 44, 43)


def test_context_crop_window_is_clipped_by_the_image_border():
    # box (2, 3, 22, 13): centre (12, 8), side 24 -> (0, -4, 24, 20) clipped to (0, 0, 24, 15)
    assert context_crop_window([2, 3, 20, 10], 30, 15, 0.2) == (0, 0, 24, 15)


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "RGB"])
def test_target_mapper_squashes_any_image_mode_to_rgb(tmp_path, mode):
    rng = np.random.RandomState(0)
    rgb = Image.fromarray(rng.randint(0, 255, (30, 50, 3), dtype=np.uint8))
    image = rgb.convert(mode)
    path = str(tmp_path / "img.png")
    image.save(path)
    out = RefSegTargetMapper(input_size=64)({"file_name": path, "height": 30, "width": 50,
                                             "annotations": [{"bbox": [0, 0, 1, 1]}]})
    expected = np.array(image.convert("RGB").resize((64, 64), Image.BICUBIC))
    assert out["image"].dtype == torch.uint8 and out["image"].shape == (3, 64, 64)
    assert np.array_equal(out["image"].permute(1, 2, 0).numpy(), expected)
    assert (out["height"], out["width"]) == (30, 50)
    assert "annotations" not in out


def test_target_mapper_error_names_the_missing_file(tmp_path):
    missing = str(tmp_path / "nope.jpg")
    with pytest.raises(FileNotFoundError, match="nope.jpg"):
        RefSegTargetMapper(input_size=32)({"file_name": missing})


def test_target_mapper_error_names_an_unreadable_file(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(IOError, match="broken.png"):
        RefSegTargetMapper(input_size=32)({"file_name": str(bad)})


def test_reference_mapper_masks_boxes_crops_and_box_only_annotations(tmp_path):
    path = str(tmp_path / "ref.png")
    Image.fromarray(np.zeros((40, 60, 3), dtype=np.uint8)).save(path)
    anns = [
        {"bbox": [10, 5, 20, 10], "bbox_mode": 1, "category_id": 2,
         "segmentation": [[10, 5, 30, 5, 30, 15, 10, 15]], "iscrowd": 0},
        {"bbox": [0, 0, 60, 40], "bbox_mode": 1, "category_id": 0, "iscrowd": 1,
         "segmentation": [[0, 0, 60, 0, 60, 40]]},
        {"bbox": [40, 20, 10, 10], "bbox_mode": 1, "category_id": 1, "iscrowd": 0},
    ]
    mapper = RefSegReferenceMapper(context_ratio=0.2, sam_input_size=32)
    out = mapper({"file_name": path, "height": 40, "width": 60, "image_id": 1, "annotations": anns})
    inst = out["instances"]
    assert inst.gt_classes.tolist() == [2, 1]          # crowd skipped
    assert inst.has_mask.tolist() == [True, False]
    assert inst.ann_index.tolist() == [0, 2]
    assert inst.gt_masks.shape == (2, 40, 60)
    assert bool(inst.gt_masks[0, 10, 20]) and not bool(inst.gt_masks[0, 30, 20])
    assert inst.gt_masks[1].sum().item() == 100          # the box rectangle until SAM 2 replaces it
    assert inst.crop_windows[0].tolist() == list(context_crop_window([10, 5, 20, 10], 60, 40, 0.2))
    assert out["sam_image"].shape == (3, 32, 32)
    assert out["image"].shape == (3, 40, 60)


def test_reference_mapper_records_the_provenance_of_each_reference(tmp_path):
    path = str(tmp_path / "ref.png")
    Image.fromarray(np.zeros((40, 60, 3), dtype=np.uint8)).save(path)
    anns = [{"bbox": [10, 5, 20, 10], "bbox_mode": 1, "category_id": 0, "iscrowd": 0,
             "segmentation": [[10, 5, 30, 5, 30, 15, 10, 15]]},
            {"bbox": [40, 20, 10, 10], "bbox_mode": 1, "category_id": 1, "iscrowd": 0}]
    out = RefSegReferenceMapper(context_ratio=0.2, sam_input_size=32)(
        {"file_name": path, "height": 40, "width": 60, "annotations": anns})
    first, second = out["instances"].sources
    assert first["box"] == [10.0, 5.0, 30.0, 15.0] and second["box"] == [40.0, 20.0, 50.0, 30.0]
    assert first["segmentation"]["size"] == [40, 60] and second["segmentation"] is None
    assert first["name"] is None


@pytest.mark.parametrize("box", [[70, 5, 10, 10], [-30, 5, 20, 10], [10, 40, 10, 5]])
def test_a_box_only_reference_outside_its_image_is_skipped_naming_it(tmp_path, caplog, box):
    import logging

    path = str(tmp_path / "ref.png")
    Image.fromarray(np.zeros((40, 60, 3), dtype=np.uint8)).save(path)
    anns = [{"bbox": [10, 5, 20, 10], "bbox_mode": 1, "category_id": 0, "iscrowd": 0},
            {"bbox": box, "bbox_mode": 1, "category_id": 1, "iscrowd": 0, "id": 77}]
    mapper = RefSegReferenceMapper(context_ratio=0.2, sam_input_size=32)
    with caplog.at_level(logging.WARNING, logger="refseg_d2"):
        out = mapper({"file_name": path, "annotations": anns})
    assert out["instances"].ann_index.tolist() == [0]
    assert "Skipping reference annotation 1 (id 77) of {}".format(path) in caplog.text
    assert "lies outside the 60x40 image" in caplog.text
