"""tools/gpu_check.py through the real code path on the tiny setting (a subset of modes, 1 image)."""
import json
import os
import sys

import pytest

from common import REPO

sys.path.insert(0, os.path.join(REPO, "tools"))
import gpu_check  # noqa: E402


def test_gpu_check_tiny_on_cpu_reports_every_setting_against_fp32(tmp_path):
    result = gpu_check.main(["--output", str(tmp_path), "--setting", "tiny", "--device", "cpu",
                             "--num-images", "1", "--warmup", "0", "--compile-backend", "eager",
                             "--nms", "0.5", "1.0", "--modes", "bf16_compile"])
    with open(os.path.join(str(tmp_path), "gpu_check.json")) as f:
        saved = json.load(f)
    assert saved == json.loads(json.dumps(result))
    runs = saved["runs"]
    assert [(r["points_per_side"], r["nms_thresh"]) for r in runs] == [(8, 0.5), (8, 1.0)]
    # compiled modes run at the first setting only
    assert list(runs[0]["modes"]) == ["fp32", "bf16_compile"] and list(runs[1]["modes"]) == ["fp32"]
    for run in runs:
        for report in run["modes"].values():
            assert report["images"] == 1 and report["images_per_s"] > 0
            assert "sam2_prompt_decoding" in report["per_image_s"]
            assert 0.0 <= report["agreement"] <= 1.0 and 0.0 <= report["exact"] <= report["agreement"]
            assert set(report["ap"]) == {"bbox", "segm"}
        fp32 = run["modes"]["fp32"]
        assert fp32["agreement"] == fp32["exact"] == 1.0 and fp32["detections"] > 0
        assert fp32["speed_ratio"] == 1.0 and fp32["ap_change"] == {"bbox": 0.0, "segm": 0.0}
    # NMS 1.0 keeps at least what 0.5 keeps
    assert runs[1]["modes"]["fp32"]["detections"] >= runs[0]["modes"]["fp32"]["detections"]
    assert saved["recommendation"] is None   # bf16 itself did not run


def test_gpu_check_refuses_cuda_only_modes_on_a_cpu(tmp_path, capsys):
    with pytest.raises(SystemExit):
        gpu_check.parse_args(["--output", str(tmp_path), "--device", "cpu", "--modes", "fp16"])
    assert "fp16 need --device cuda" in capsys.readouterr().err
    args = gpu_check.parse_args(["--output", str(tmp_path), "--device", "cpu", "--setting", "small"])
    assert args.modes == ["fp32", "bf16"] and args.grids == [32, 16] and args.nms == [0.5, 1.0]


def test_bf16_is_recommended_only_at_95_percent_agreement_in_every_setting():
    runs = [{"modes": {"bf16": {"agreement": 0.97}}}, {"modes": {"bf16": {"agreement": 0.949}}}]
    assert gpu_check.recommendation(runs) == {"min_agreement": 0.949, "bf16_recommended": False}
    assert gpu_check.recommendation(runs[:1])["bf16_recommended"]


def test_match_share_counts_one_for_one_matches():
    import torch
    from detectron2.structures import Instances

    def inst(classes, scores, masks):
        out = Instances((4, 4))
        out.pred_classes = torch.tensor(classes)
        out.scores = torch.tensor(scores)
        out.pred_masks = torch.stack(masks)
        return out

    full, half = torch.ones(4, 4, dtype=torch.bool), torch.zeros(4, 4, dtype=torch.bool)
    half[:2] = True
    ref = inst([0, 1], [0.9, 0.8], [full, half])
    assert gpu_check.match_share([ref], [ref]) == 1.0
    # second prediction: same mask, score off by 2e-3 -> unmatched; an extra prediction counts
    got = inst([0, 1, 2], [0.9, 0.802, 0.1], [full, half, full])
    assert gpu_check.match_share([ref], [got]) == 1 / 3


def test_precision_steps_attributes_iou_changes_to_the_decoder_not_the_upscaling(tmp_path):
    import precision_steps

    result = precision_steps.main(["--output", str(tmp_path), "--points-per-side", "4",
                                   "--images", "1", "--input-size", "256"])
    assert list(result) == list(precision_steps.STEPS) + ["all of them"]
    upscaling, transformer = result["mask upscaling"], result["two-way transformer"]
    assert upscaling["kept"] > 0
    # the upscaling comes after the IoU head: it cannot move an IoU or a choice
    assert upscaling["max_iou_change"] == 0 and upscaling["threshold_flips"] == 0
    assert upscaling["best_of_3_flips"] == 0 and upscaling["min_mask_iou"] > 0.9
    assert transformer["max_iou_change"] > 0
