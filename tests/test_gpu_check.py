"""tools/gpu_check.py --tiny --device cpu through the real code path (a subset of modes, 1 image)."""
import json
import os
import sys

from common import REPO

sys.path.insert(0, os.path.join(REPO, "tools"))
import gpu_check  # noqa: E402


def test_gpu_check_tiny_on_cpu_reports_modes_and_agreement(tmp_path):
    result = gpu_check.main(["--output", str(tmp_path), "--tiny", "--device", "cpu",
                             "--num-images", "1", "--warmup", "0", "--compile-backend", "eager",
                             "--modes", "shared", "bf16_compile"])
    with open(os.path.join(str(tmp_path), "gpu_check.json")) as f:
        saved = json.load(f)
    assert saved == json.loads(json.dumps(result))
    modes = saved["modes"]
    assert list(modes) == ["fp32", "shared", "bf16_compile"]
    for report in modes.values():
        assert report["images"] == 1 and report["images_per_s"] > 0
        assert "sam2_prompt_decoding" in report["per_image_s"]
        assert 0.0 <= report["agreement"] <= 1.0
    assert modes["fp32"]["agreement"] == 1.0 and modes["fp32"]["detections"] > 0
    assert modes["shared"]["agreement"] == 1.0


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
