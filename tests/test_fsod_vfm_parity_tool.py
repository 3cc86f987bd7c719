"""
The FSOD-VFM parity check's inputs (refseg_d2.testing.parity_inputs) and the stand-ins of
tools/fsod_vfm_theirs.py (the authors' side of tools/fsod_vfm_parity.py) that run without the
authors' repository: the proposal edge cases are present, the support file follows the
references, the UPN stand-in answers in UPN's format.
"""
import json
import os
import sys
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image

from refseg_d2.testing import parity_inputs
from refseg_d2.testing.parity_inputs import (FEW_BOXES_IMAGES, MANY_BOXES_IMAGE, SINGLE_BOX_IMAGE,
                                             make_parity_inputs)

import fsod_vfm_theirs  # noqa: E402  (tools/ is on the path: conftest.py)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    paths = make_parity_inputs(str(tmp_path_factory.mktemp("parity")), seed=0)
    loaded = {k: json.load(open(paths[k])) for k in ("refs_json", "test_json", "support_json",
                                                       "boxes_json")}
    return paths, loaded


def _by_image(rows):
    grouped = {}
    for r in rows:
        grouped.setdefault(r["image_id"], []).append(r)
    return grouped


def test_support_file_lists_every_reference_annotation_by_class_in_category_id_order(inputs):
    paths, data = inputs
    refs, support = data["refs_json"], data["support_json"]
    names = {c["id"]: c["name"] for c in refs["categories"]}
    assert list(support) == [names[i] for i in sorted(names)]
    files = {im["id"]: im["file_name"] for im in refs["images"]}
    for cid, name in names.items():
        expected = [{"image": files[a["image_id"]], "bbox": a["bbox"]}
                    for a in refs["annotations"] if a["category_id"] == cid]
        assert support[name] == expected
    for entries in support.values():
        for e in entries:
            assert os.path.exists(os.path.join(paths["image_root"], e["image"]))


def test_targets_come_in_several_sizes_including_portrait_and_tiny(inputs):
    sizes = {(im["width"], im["height"]) for im in inputs[1]["test_json"]["images"]}
    assert {(320, 240), (240, 320), (500, 375), (100, 75), (288, 216)} <= sizes


def test_every_target_has_a_proposal_at_threshold_and_one_has_over_100(inputs):
    _, data = inputs
    grouped = _by_image(data["boxes_json"])
    assert set(grouped) == {im["id"] for im in data["test_json"]["images"]}
    kept = {i: sum(np.float32(r["score"]) >= np.float32(0.01) for r in rows)
            for i, rows in grouped.items()}
    assert min(kept.values()) >= 1 and kept[MANY_BOXES_IMAGE] > 100


def test_scores_are_distinct_float32_values_with_ties_at_two_decimals_and_threshold_cases(inputs):
    for rows in _by_image(inputs[1]["boxes_json"]).values():
        scores = [r["score"] for r in rows]
        assert all(float(np.float32(s)) == s for s in scores)
        assert len(set(scores)) == len(scores)
    scores = [r["score"] for r in _by_image(inputs[1]["boxes_json"])[102]]
    assert float(np.float32(0.01)) in scores and 0.0 in scores
    assert any(0 < s < 0.01 for s in scores)
    rounded = [round(s, 2) for s in scores]
    assert len(set(rounded)) < len(rounded)


def _corners(rows, dtype):
    xywh = np.array([r["bbox"] for r in rows], dtype=np.float64)
    xyxy = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
    return xyxy.astype(dtype).astype(np.int32)


def test_boxes_cover_outside_degenerate_and_duplicate_cases_and_cast_alike(inputs):
    sizes = {im["id"]: (im["width"], im["height"]) for im in inputs[1]["test_json"]["images"]}
    for image_id, rows in _by_image(inputs[1]["boxes_json"]).items():
        w, h = sizes[image_id]
        ints = _corners(rows, np.float32)
        assert (ints == _corners(rows, np.float64)).all()
        if image_id in FEW_BOXES_IMAGES:
            assert len(rows) <= 5
            continue
        clipped = np.clip(ints, 0, [w, h, w, h])
        empty = (clipped[:, 2] <= clipped[:, 0]) | (clipped[:, 3] <= clipped[:, 1])
        assert empty.sum() >= 3 and (ints[:, 2] == ints[:, 0]).any()
        assert (ints[:, :2] < 0).any() and ((ints[:, 2] > w) | (ints[:, 3] > h)).any()
        if image_id == SINGLE_BOX_IMAGE:
            keep = np.array([r["score"] >= 0.01 for r in rows]) & ~empty
            assert keep.sum() == 1
    first = _by_image(inputs[1]["boxes_json"])[101]
    boxes = [tuple(r["bbox"]) for r in first]
    assert len(set(boxes)) < len(boxes)
    assert parity_inputs.TARGET_SPLITS and parity_inputs.REFERENCE_SPLITS


def test_upn_stand_in_answers_by_pixels_in_upn_format_sorted_by_score(tmp_path):
    image = Image.fromarray(np.arange(48, dtype=np.uint8).reshape(4, 4, 3))
    proposals = {7: (np.array([[0, 0, 2, 2], [1, 1, 3, 3]], np.float32),
                     np.array([0.2, 0.9], np.float32))}
    calls = []
    upn = fsod_vfm_theirs.boxes_file_upn(lambda self, r, **kw: r, proposals,
                                         {fsod_vfm_theirs.pixel_key(image): 7}, calls)("unused")
    out = upn.inference(image.copy(), "coarse_grained_prompt")
    assert out["original_xyxy_boxes"].dtype == np.float32
    assert out["original_xyxy_boxes"].shape == (1, 2, 4)
    assert out["original_xyxy_boxes"][0, 0].tolist() == [1, 1, 3, 3]
    assert out["scores"].dtype == torch.float32 and out["scores"].shape == (1, 2, 1)
    assert out["scores"][0, :, 0].tolist() == pytest.approx([0.9, 0.2])
    assert upn.filter(out) is out
    assert calls == [{"image_id": 7, "prompt_type": "coarse_grained_prompt", "boxes": 2}]


def test_read_proposals_gives_float32_xyxy_from_the_xywh_file(tmp_path):
    path = tmp_path / "boxes.json"
    path.write_text(json.dumps([{"image_id": 3, "bbox": [-1.5, 2.25, 10.5, 4.0], "score": 0.5}]))
    boxes, scores = fsod_vfm_theirs.read_proposals(str(path))[3]
    assert boxes.dtype == np.float32 and boxes.tolist() == [[-1.5, 2.25, 9.0, 6.25]]
    assert scores.tolist() == [0.5]


def test_their_filter_loads_with_stand_ins_for_the_model_imports(tmp_path, monkeypatch):
    wrapper = tmp_path / "chatrex" / "upn" / "inference_wrapper.py"
    wrapper.parent.mkdir(parents=True)
    wrapper.write_text(textwrap.dedent('''
        from mmengine import Config
        import chatrex.upn.transforms.transform as T
        from chatrex.upn import build_architecture
        from chatrex.upn.models.module import nested_tensor_from_tensor_list

        class UPNWrapper:
            def filter(self, result, min_score, nms_value=0.8):
                return ("filtered", min_score, Config, T)
    '''))
    for name in fsod_vfm_theirs.stand_in_modules():
        monkeypatch.delitem(sys.modules, name, raising=False)
    package, their_filter = fsod_vfm_theirs.load_their_filter(str(tmp_path))
    assert their_filter(None, {}, 0.01)[:2] == ("filtered", 0.01)
    assert sys.modules["chatrex.upn"] is package
    with pytest.raises(RuntimeError, match="replaced by a boxes file"):
        package.build_architecture({})
    for name in fsod_vfm_theirs.stand_in_modules():
        monkeypatch.delitem(sys.modules, name, raising=False)
