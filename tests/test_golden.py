"""
Golden numbers of the faithful path: the predictions of the seeded tiny model on synthetic data.

The fixture ``tests/golden_tiny_predictions.json`` was produced once by this test from the code
whose prediction-for-prediction parity with the authors' code is recorded in the README
("Faithfulness"). It pins the memory (its checksum) and, per target image, every detection:
class, score (to 1e-5), box, mask area and an MD5 of the mask bits. The data is chosen so that
every resampling of the method is exercised in both directions: reference crops larger and
smaller than the encoder input (torch bicubic / bilinear, no antialias), box-only references
(SAM 2 box prompts), targets larger than the mask grid and smaller than it (bilinear
upsampling with antialias, which only acts when the output is smaller than the 64 x 64 grid).
The model runs on one CPU thread: with more threads, matrix products are summed in another
order, which flips the odd mask pixel at the threshold and moves a merged score by ~1e-4. The
numbers were produced on this project's CPU (x86-64 with AVX-512).

Regenerate it only for an intended change of the faithful path's numbers, stated in the commit
message and the closing note:

    REFSEG_REGENERATE_GOLDEN=1 .venv/bin/python -m pytest -q tests/test_golden.py
"""
import contextlib
import hashlib
import json
import os

import numpy as np
import pytest
import torch
from common import register, tiny_cfg
from detectron2.data import DatasetCatalog

from refseg_d2 import RefSegTargetMapper, RefSegTrainer, fill_memory
from refseg_d2.testing.synthetic import make_split

GOLDEN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "golden_tiny_predictions.json")
SCORE_TOL = 1e-5


def _mask_digest(mask):
    bits = np.packbits(mask.numpy().astype(np.uint8), axis=None)
    return hashlib.md5(bits.tobytes()).hexdigest()


# name -> config overrides: the tiny config's defaults, and every proposal kept by the NMS (so
# soft merging and the top-k see many overlapping masks). On CPU the kept masks are streamed
# (FULL_MASKS.MODE auto); the "_dense" run holds them at full size at once and must give the
# same golden numbers.
KEEP_ALL = ["MODEL.REFSEG.NMS_THRESH", 1.0, "MODEL.REFSEG.POINTS_PER_SIDE", 12]
SETTINGS = {
    "defaults": [],
    "nms_keeps_all": KEEP_ALL,
    "nms_keeps_all_dense": KEEP_ALL + ["MODEL.REFSEG.FULL_MASKS.MODE", "dense"],
}
# A setting checked against another's golden numbers (the same predictions, another path).
GOLDEN_OF = {"nms_keeps_all_dense": "nms_keeps_all"}


@contextlib.contextmanager
def _one_thread():
    """CPU kernels split work by thread count, which moves the last bits of SAM 2's logits."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _memory_digest(features):
    """Two sums of the (C, K, D) instance features that move with any change of a value."""
    f = features.double()
    weights = torch.arange(1, f.numel() + 1, dtype=torch.float64).reshape(f.shape) / f.numel()
    return [float(f.abs().sum()), float((f * weights).sum())]


@pytest.fixture(scope="module", params=sorted(SETTINGS))
def golden_run(request, random_weights, tmp_path_factory):
    root = str(tmp_path_factory.mktemp("golden_data"))
    refs = register("golden_refs", make_split(root, "refs", 4, seed=10, size=(320, 240),
                                              overlap_every=0))
    box_refs = register("golden_box_refs", make_split(
        root, "box_refs", 3, seed=11, size=(160, 120), overlap_every=0, box_only_every=2,
        first_image_id=51))
    targets = [
        register("golden_targets_large", make_split(root, "large", 3, seed=12, size=(128, 96),
                                                    first_image_id=101)),
        register("golden_targets_small", make_split(root, "small", 2, seed=13, size=(56, 44),
                                                    first_image_id=201)),
    ]
    cfg = tiny_cfg(random_weights, tmp_path_factory.mktemp("golden_out"), SETTINGS[request.param])
    model = RefSegTrainer.build_model(cfg)
    with _one_thread():
        stats = fill_memory(cfg, model, [refs, box_refs])
    mapper = RefSegTargetMapper(cfg)
    images = []
    with torch.no_grad(), _one_thread():
        for name in targets:
            for d in DatasetCatalog.get(name):
                inst = model([mapper(d)])[0]["instances"].to("cpu")
                images.append({
                    "file": os.path.basename(d["file_name"]),
                    "size": list(inst.image_size),
                    "classes": inst.pred_classes.tolist(),
                    "scores": [round(float(s), 7) for s in inst.scores],
                    "boxes": inst.pred_boxes.tensor.to(torch.int64).tolist(),
                    "areas": inst.pred_masks.flatten(1).sum(1).tolist(),
                    "masks_md5": [_mask_digest(m) for m in inst.pred_masks],
                })
    return request.param, {
        "memory": {"references": stats["references"], "sam2_masks": stats["sam2_masks"],
                   "digest": _memory_digest(model.memory.instance_features)},
        "images": images,
    }


def _load_golden():
    if not os.path.isfile(GOLDEN):
        return {}
    with open(GOLDEN) as f:
        return json.load(f)


def test_golden_predictions_of_the_tiny_model_are_unchanged(golden_run):
    setting, run = golden_run
    if os.environ.get("REFSEG_REGENERATE_GOLDEN"):
        if setting in GOLDEN_OF:
            pytest.skip("{} is checked against {}".format(setting, GOLDEN_OF[setting]))
        golden = dict(_load_golden(), **{setting: run})
        with open(GOLDEN, "w") as f:
            json.dump(golden, f, indent=1, sort_keys=True)
        pytest.skip("regenerated {} of {}".format(setting, GOLDEN))
    golden = _load_golden()[GOLDEN_OF.get(setting, setting)]
    mem, want_mem = run["memory"], golden["memory"]
    assert mem["references"] == want_mem["references"]
    assert mem["sam2_masks"] == want_mem["sam2_masks"]
    assert mem["digest"] == pytest.approx(want_mem["digest"], rel=1e-6)
    assert [im["file"] for im in run["images"]] == [im["file"] for im in golden["images"]]
    for got, want in zip(run["images"], golden["images"]):
        where = "{} ({})".format(want["file"], setting)
        assert got["size"] == want["size"], where
        assert got["classes"] == want["classes"], where
        assert np.allclose(got["scores"], want["scores"], rtol=0, atol=SCORE_TOL), where
        assert got["boxes"] == want["boxes"], where
        assert got["areas"] == want["areas"], where
        assert got["masks_md5"] == want["masks_md5"], where


def test_golden_fixture_exercises_detections_on_every_target():
    """The fixture is only a guard if there is something to compare on every image."""
    golden = _load_golden()
    assert sorted(golden) == sorted(set(SETTINGS) - set(GOLDEN_OF))
    for run in golden.values():
        assert run["memory"]["sam2_masks"] > 0
        assert all(len(im["classes"]) > 0 for im in run["images"])
        assert {tuple(im["size"]) for im in run["images"]} == {(96, 128), (44, 56)}
    many = golden["nms_keeps_all"]["images"]
    assert sum(len(im["classes"]) for im in many) >= 5 * 20
