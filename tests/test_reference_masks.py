"""Mask images and arrays given as references: binary as meant, grey levels warned about."""
import logging

import numpy as np
import pytest
from PIL import Image

from refseg_d2.data.reference_sources import load_folder_references
from refseg_d2.utils.masks import binary_mask


def _soft_mask(h=40, w=60):
    """Object (255) in the middle with a soft edge (200), background noise 1..40."""
    rng = np.random.default_rng(0)
    mask = rng.integers(1, 41, size=(h, w)).astype(np.uint8)
    mask[10:30, 15:45] = 200
    mask[12:28, 17:43] = 255
    return mask


def _folder(tmp_path, mask):
    folder = tmp_path / "refs" / "cat"
    folder.mkdir(parents=True)
    Image.fromarray(np.zeros(mask.shape + (3,), np.uint8)).save(folder / "001.jpg")
    Image.fromarray(mask).save(folder / "001_mask.png")
    return str(tmp_path / "refs"), str(folder / "001_mask.png")


def _mask_of(dicts):
    from refseg_d2.utils.masks import decode_segmentation

    d = dicts[0]
    return decode_segmentation(d["annotations"][0]["segmentation"], d["height"], d["width"])


def test_a_soft_folder_mask_is_binarised_at_mid_grey_with_a_warning_naming_the_file(
        tmp_path, caplog):
    soft = _soft_mask()
    root, mask_file = _folder(tmp_path, soft)
    with caplog.at_level(logging.WARNING):
        dicts, _, names = load_folder_references(root)
    mask = _mask_of(dicts)
    assert mask.sum() == 20 * 30  # the 200 and 255 pixels; the 1..40 background is not object
    assert mask[10:30, 15:45].all()
    assert any(mask_file in r.getMessage() and "not binary" in r.getMessage()
               for r in caplog.records)


@pytest.mark.parametrize("level", [1, 255])
def test_a_two_level_mask_is_non_zero_object_without_a_warning(tmp_path, caplog, level):
    labels = np.zeros((40, 60), np.uint8)
    labels[5:15, 5:25] = level
    root, _ = _folder(tmp_path, labels)
    with caplog.at_level(logging.WARNING):
        dicts, _, _ = load_folder_references(root)
    assert _mask_of(dicts).sum() == 10 * 20
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_mask_covering_nearly_the_whole_image_is_warned_about_with_its_share(caplog):
    mask = np.ones((20, 20), bool)
    mask[0, :4] = False  # 396 of 400 pixels: 99.0%
    with caplog.at_level(logging.WARNING):
        out = binary_mask(mask, "masks[0] (class 'dog')")
    assert out is mask
    assert any("masks[0] (class 'dog')" in r.getMessage() and "99.0%" in r.getMessage()
               for r in caplog.records)


def test_binary_mask_rules_for_arrays():
    probabilities = np.array([[0.1, 0.49, 0.5], [0.9, 0.0, 1.0]], np.float32)
    assert binary_mask(probabilities, "p").tolist() == [[False, False, True], [True, False, True]]
    assert binary_mask(np.array([[0, 7], [7, 0]]), "l").tolist() == [[False, True], [True, False]]
    with pytest.raises(ValueError, match="must be 2-D"):
        binary_mask(np.zeros((2, 2, 3)), "rgb.png")
