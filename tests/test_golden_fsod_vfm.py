"""
FSOD-VFM's predictions, pinned: ``tests/golden_fsod_vfm_predictions.json`` holds what FSOD-VFM's
own code predicts (``tools/fsod_vfm_parity.py``: their ``main.py`` pipeline on CPU, their
proposal network replaced by a boxes file) on random-weight SAM 2.1 Hiera-T and DINOv2 ViT-S/14
checkpoints in the official formats and the synthetic parity inputs
(``refseg_d2.testing.parity_inputs``: references and targets at five image sizes, a boxes file
with every edge case of their box handling). refseg-d2 matched it 184 of 184 (max score
difference 5.4e-7) when it was made; this test runs ``tools/train_net.py`` with
``configs/quick_schedules/fsod_vfm_tiny_cpu.yaml`` on the same inputs and compares.

Tolerances, for other CPUs: the same count of detections on every image, each paired with one
of the fixture's by class and integral box, scores within 5e-3, at least 97% of them within
1e-3 (the reference masks come from SAM 2 under bf16 autocast, whose kernels differ between CPU
generations). Regenerate only with the parity tool (``--write-golden``), after a passed check.
"""
import importlib.util
import json
import os

from common import REPO

from refseg_d2.evaluation.parity import compare_predictions, summary_line

FIXTURE = os.path.join(REPO, "tests", "golden_fsod_vfm_predictions.json")


def _parity_tool():
    spec = importlib.util.spec_from_file_location(
        "fsod_vfm_parity", os.path.join(REPO, "tools", "fsod_vfm_parity.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_fsod_vfm_predictions_match_the_authors_code_pinned(tmp_path):
    with open(FIXTURE) as f:
        golden = json.load(f)
    tool = _parity_tool()
    assert golden["inputs"]["sam2_config"] == tool.SAM2_CONFIG
    assert golden["inputs"]["encoder"] == tool.ENCODER
    paths = tool.prepare(str(tmp_path), golden["inputs"]["seed"])
    ours, log = tool.run_ours(paths, str(tmp_path), golden["threads"], REPO)
    assert ours is not None, open(log).read()[-4000:]
    loose = compare_predictions(golden["predictions"], ours, score_tol=5e-3, min_matched=1.0)
    assert loose["passed"], summary_line(loose, 5e-3) + "\n" + json.dumps(loose["worst_pairs"])
    tight = compare_predictions(golden["predictions"], ours, score_tol=1e-3, min_matched=0.97)
    assert tight["passed"], summary_line(tight) + "\n" + json.dumps(tight["worst_pairs"])
