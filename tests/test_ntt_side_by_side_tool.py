"""
tools/ntt_side_by_side.py (NTT side by side with the authors' code) and its child
tools/ntt_theirs.py, without the authors' repository: the options, our options from their
settings, the timing table and JSON, the comparison, the stand-ins, and our side run through
tools/benchmark.py at a 2 x 2 grid and the tiny sizes. With NTT_THEIR_REPO set to a checkout of
their repository, the whole tool also runs at a 2 x 2 grid on one target image (slow: their
side runs SAM 2 at 1024 px and DINOv2 at 518 px).
"""
import json
import math
import os

import numpy as np
import pycocotools.mask as mask_utils
import pytest

import ntt_side_by_side as sbs  # noqa: E402  (tools/ is on the path: conftest.py)
import ntt_theirs  # noqa: E402

THEIR_REPO = os.environ.get("NTT_THEIR_REPO", "")


def test_options_default_to_the_paper_grid_and_need_their_repo_unless_skipped():
    args = sbs.parse_args(["--their-repo", "repo", "--work-dir", "w"])
    assert (args.points_per_side, args.threads, args.warmup, args.num_images) == (32, 2, 1, 3)
    assert not (args.skip_theirs or args.skip_ours)
    assert sbs.parse_args(["--work-dir", "w", "--skip-theirs"]).their_repo is None
    for bad in (["--work-dir", "w"], ["--work-dir", "w", "--skip-theirs", "--skip-ours"],
                ["--work-dir", "w", "--skip-theirs", "--num-images", "0"],
                ["--their-repo", "r"]):
        with pytest.raises(SystemExit):
            sbs.parse_args(bad)


def test_our_options_take_every_setting_from_theirs_and_the_shared_decoder():
    paths = {"sam2_ckpt": "s.pt", "dinov2_ckpt": "d.pth"}
    settings = dict(sbs.THEIR_DEFAULTS, points_per_side=16, iou_thr=0.25, testing_point_bs=256)
    opts = sbs.our_opts(paths, settings)
    pairs = dict(zip(opts[0::2], opts[1::2]))
    assert pairs["MODEL.REFSEG.SAM2.DECODER"] == "shared"
    assert pairs["MODEL.REFSEG.SAM2.WEIGHTS"] == "s.pt"
    assert pairs["MODEL.REFSEG.POINTS_PER_SIDE"] == "16"
    assert pairs["MODEL.REFSEG.PRED_IOU_THRESH"] == "0.25"
    assert pairs["MODEL.REFSEG.SAM2.INPUT_SIZE"] == "1024"
    assert pairs["MODEL.REFSEG.ENCODER.INPUT_SIZE"] == "518"
    for theirs, ours in sbs.OUR_KEYS:
        assert pairs[ours] == str(settings[theirs])
    text = sbs.format_settings(settings, opts)
    assert "iou_thr = 0.25  <->  MODEL.REFSEG.PRED_IOU_THRESH 0.25" in text
    assert "testing_point_bs = 256" in text


def _their_output():
    image = {"load_s": 0.1, "step_s": 10.5}
    return {"images": [dict(image, image_id=101, warmup=True, forward_s=30.0),
                       dict(image, image_id=102, warmup=False, forward_s=9.0),
                       dict(image, image_id=103, warmup=False, forward_s=11.0)],
            "fill_memory_s": 20.0, "postprocess_memory_s": 1.0, "memory_references": 12,
            "peak_memory": {"inference": {"cpu_rss_peak_mib": 2048.0}}, "threads": 2}


def _our_report():
    return {"inference": {"images": 2, "model_s": 5.0,
                          "per_image_s": {"image_loading": 0.01, "dinov2": 1.0,
                                          "sam2_image_encoder": 1.4}},
            "memory_fill_s": 3.0, "memory_references": 12, "threads": 2,
            "peak_memory": {"inference": {"cpu_rss_peak_mib": 1024.0}}}


def test_timing_of_both_sides_and_the_table():
    theirs, ours = sbs.their_timing(_their_output()), sbs.our_timing(_our_report())
    assert theirs["images"] == 2 and theirs["forward_s"] == pytest.approx(10.0)
    assert theirs["per_image_forward_s"] == [9.0, 11.0] and theirs["memory_fill_s"] == 21.0
    assert ours["forward_s"] == pytest.approx(2.5) and ours["image_loading_s"] == 0.01
    assert ours["stages_total_s"] == pytest.approx(2.4)
    table = sbs.format_table(theirs, ours)
    assert _row(table, "s / target image (model forward)") == ["10.000", "2.500", "4.00 x"]
    assert _row(table, "memory filling, s in all") == ["21.000", "3.000", ""]
    assert _row(table, "torch threads") == ["2", "2", ""]
    assert "dinov2 1.000, sam2_image_encoder 1.400 (total 2.400)" in table
    assert _row(sbs.format_table(None, ours), "s / target image (model forward)") == [
        "-", "2.500", "-"]


def _row(table, name):
    """The cells after ``name`` in its row of a pipe table."""
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells[0] == name:
            return cells[1:]
    raise AssertionError("no row {!r} in\n{}".format(name, table))


def _prediction(image_id, category_id, box, score, mask):
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("utf-8")
    return {"image_id": image_id, "category_id": category_id, "bbox": box, "score": score,
            "segmentation": rle}


def test_compare_pairs_predictions_and_masks_on_the_timed_images_only():
    mask = np.zeros((6, 8), dtype=bool)
    mask[1:4, 2:6] = True
    theirs = [_prediction(102, 7, [2, 1, 3, 2], 0.5, mask),
              _prediction(101, 3, [0, 0, 1, 1], 0.9, mask)]          # a warm-up image
    ours = [_prediction(102, 7, [2.0, 1.0, 3.0, 2.0], 0.5000001, mask)]
    result = sbs.compare(theirs, ours, {102: (6, 8)}, 1e-3)
    assert result["result"]["passed"] and result["mask_agreement"] == 1.0
    assert not result["left_out"] and "1/1 predictions matched" in result["summary"]
    other = mask.copy()
    other[1:4, 2:4] = False
    moved = sbs.compare(theirs, [_prediction(102, 7, [2, 1, 3, 2], 0.5, other)], {102: (6, 8)},
                        1e-3)
    assert moved["result"]["passed"] and moved["mask_agreement"] == 0.0
    empty = _prediction(101 + 1, 12, [0, 0, 0, 0], float("nan"), np.zeros_like(mask))
    nan = sbs.compare(theirs + [empty], ours, {102: (6, 8)}, 1e-3)
    assert nan["result"]["passed"] and len(nan["left_out"]) == 1
    assert "1/2 predictions matched" in nan["summary_all"]
    not_empty = sbs.compare([dict(theirs[0], score=float("nan"))], ours, {102: (6, 8)}, 1e-3)
    assert not not_empty["left_out"] and not not_empty["result"]["passed"]


def test_the_pca_stand_in_finds_the_principal_axes():
    rng = np.random.RandomState(0)
    x = (rng.randn(200, 3) * [5.0, 1.0, 0.1] + [1.0, 2.0, 3.0]).astype(np.float32)
    pca = ntt_theirs.PCA(n_components=2).fit(x)
    assert pca.mean_ == pytest.approx([1.0, 2.0, 3.0], abs=0.5)
    assert pca.components_.dtype == np.float32 and pca.components_.shape == (2, 3)
    assert abs(pca.components_[0, 0]) > 0.99 and abs(pca.components_[1, 1]) > 0.99


def test_stand_in_modules_resolve_the_vendored_dinov2_and_have_specs(tmp_path):
    mods = ntt_theirs.stand_in_modules(str(tmp_path))
    assert mods["dinov2"].__path__ == [str(tmp_path / "dinov2" / "dinov2"),
                                       str(tmp_path / "dinov2")]
    assert mods["sklearn"].decomposition.PCA is ntt_theirs.PCA
    assert mods["pytorch_lightning"].LightningModule.__name__ == "Module"
    for name, m in mods.items():
        assert m.__spec__.name == name
    with pytest.raises(RuntimeError, match="evaluate"):
        mods["tidecv"].Data("None")


def test_our_side_runs_through_the_benchmark_at_a_2x2_grid(tmp_path, random_weights, monkeypatch):
    weights = tmp_path / "weights"
    weights.mkdir()
    for path in random_weights:
        os.symlink(path, weights / os.path.basename(path))
    monkeypatch.setattr(sbs, "THEIR_DEFAULTS",
                        dict(sbs.THEIR_DEFAULTS, target_image_size=256, encoder_img_size=112))
    status = sbs.main(["--skip-theirs", "--work-dir", str(tmp_path), "--points-per-side", "2",
                       "--num-images", "1", "--warmup", "1", "--threads", "1"])
    assert status == 0
    out = json.load(open(tmp_path / "side_by_side.json"))
    assert out["timed_images"] == [102] and out["settings"]["points_per_side"] == 2
    assert "MODEL.REFSEG.SAM2.INPUT_SIZE" in out["our_opts"]
    ours = out["timing"]["ours"]
    assert ours["images"] == 1 and ours["forward_s"] >= ours["stages_total_s"] > 0
    assert ours["memory_references"] == 12 and ours["threads"] == 1
    predictions = json.load(open(tmp_path / "ours.json"))
    assert {p["image_id"] for p in predictions} <= {102}
    assert {p["category_id"] for p in predictions} <= {3, 7, 12}
    assert all("counts" in p["segmentation"] for p in predictions)


def _their_checkout():
    return THEIR_REPO and os.path.isfile(os.path.join(
        THEIR_REPO, "no_time_to_train", "models", "Sam2MatchingBaseline_noAMG.py"))


@pytest.mark.skipif(not _their_checkout(), reason="NTT_THEIR_REPO: no checkout of the authors' "
                    "no-time-to-train")
def test_both_sides_match_at_a_2x2_grid(tmp_path, random_weights):
    weights = tmp_path / "weights"
    weights.mkdir()
    for path in random_weights:
        os.symlink(path, weights / os.path.basename(path))
    status = sbs.main(["--their-repo", THEIR_REPO, "--work-dir", str(tmp_path),
                       "--points-per-side", "2", "--num-images", "1", "--warmup", "0",
                       "--threads", "1"])
    out = json.load(open(tmp_path / "side_by_side.json"))
    assert status == 0, out.get("parity", {}).get("summary")
    assert out["settings"]["testing_point_bs"] == 4
    assert math.isfinite(out["theirs_over_ours"])
