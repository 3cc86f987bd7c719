"""Proposal cache: identical predictions, invalidation, atomic writes; compact memory files."""
import glob
import os

import pytest
import torch
from common import register, tiny_cfg
from detectron2.data import DatasetCatalog

from refseg_d2 import RefSegTargetMapper, RefSegTrainer, fill_memory, load_memory, save_memory
from refseg_d2.modeling.proposals import cache as proposal_cache
from refseg_d2.modeling.memory import MemoryBank


def _run(model, cfg, synthetic):
    mapper = RefSegTargetMapper(cfg)
    dicts = DatasetCatalog.get(register("cache_targets", synthetic["targets"]))
    with torch.no_grad():
        return [model([mapper(d)])[0]["instances"] for d in dicts]


def _model(random_weights, synthetic, out, refs="refs", opts=()):
    cfg = tiny_cfg(random_weights, out, list(opts))
    model = RefSegTrainer.build_model(cfg)
    fill_memory(cfg, model, [register("cache_" + refs, synthetic[refs])])
    return model, cfg


def _assert_identical(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert torch.equal(x.pred_masks, y.pred_masks)
        assert torch.equal(x.pred_classes, y.pred_classes)
        assert torch.equal(x.scores, y.scores)
        assert torch.equal(x.pred_boxes.tensor, y.pred_boxes.tensor)


def _forbid_foundation_models(model):
    def boom(*args, **kwargs):
        raise AssertionError("SAM 2 / DINOv2 called on a cached image")

    model.prompter.encode_image = boom
    model.encoder.forward = boom


def test_cached_run_with_other_references_matches_an_uncached_run(random_weights, synthetic, tmp_path):
    cache = ["MODEL.REFSEG.CACHE.ENABLED", True, "MODEL.REFSEG.CACHE.DIR", str(tmp_path / "cache")]
    first, cfg = _model(random_weights, synthetic, tmp_path / "a", "refs", cache)
    _run(first, cfg, synthetic)                                 # fills the cache
    assert first.cache.misses == 5 and first.cache.hits == 0

    second, cfg = _model(random_weights, synthetic, tmp_path / "b", "refs_boxes", cache)
    _forbid_foundation_models(second)
    cached = _run(second, cfg, synthetic)
    assert second.cache.hits == 5 and second.cache.misses == 0

    plain, cfg = _model(random_weights, synthetic, tmp_path / "c", "refs_boxes")
    _assert_identical(cached, _run(plain, cfg, synthetic))
    assert sum(len(x) for x in cached) > 0


def test_cache_is_rebuilt_when_a_setting_or_the_image_changes(random_weights, synthetic, tmp_path):
    cache_dir = str(tmp_path / "cache")
    opts = ["MODEL.REFSEG.CACHE.ENABLED", True, "MODEL.REFSEG.CACHE.DIR", cache_dir]
    model, cfg = _model(random_weights, synthetic, tmp_path, "refs", opts)
    _run(model, cfg, synthetic)
    other, cfg2 = _model(random_weights, synthetic, tmp_path, "refs",
                         opts + ["MODEL.REFSEG.PRED_IOU_THRESH", 0.3])
    _run(other, cfg2, synthetic)
    assert other.cache.dir != model.cache.dir and other.cache.hits == 0
    assert len(glob.glob(os.path.join(cache_dir, "*", "settings.json"))) == 2

    image = DatasetCatalog.get(register("cache_targets", synthetic["targets"]))[0]["file_name"]
    st = os.stat(image)
    os.utime(image, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    again, cfg = _model(random_weights, synthetic, tmp_path, "refs", opts)
    _run(again, cfg, synthetic)
    assert (again.cache.hits, again.cache.misses) == (4, 1)


def test_interrupted_cache_write_leaves_no_entry(random_weights, synthetic, tmp_path, monkeypatch):
    opts = ["MODEL.REFSEG.CACHE.ENABLED", True]
    model, cfg = _model(random_weights, synthetic, tmp_path, "refs", opts)
    real_save = torch.save

    def interrupted_save(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)
        f.truncate(10)
        raise KeyboardInterrupt

    monkeypatch.setattr(proposal_cache.torch, "save", interrupted_save)
    with pytest.raises(KeyboardInterrupt):
        _run(model, cfg, synthetic)
    assert os.listdir(model.cache.dir) == ["settings.json"]


def test_corrupt_cache_entry_is_discarded_and_recomputed(random_weights, synthetic, tmp_path):
    opts = ["MODEL.REFSEG.CACHE.ENABLED", True]
    model, cfg = _model(random_weights, synthetic, tmp_path, "refs", opts)
    reference = _run(model, cfg, synthetic)
    entries = sorted(glob.glob(os.path.join(model.cache.dir, "*.pt")))
    with open(entries[0], "wb") as f:
        f.write(b"garbage")
    model.cache.hits = model.cache.misses = 0
    _assert_identical(_run(model, cfg, synthetic), reference)
    assert (model.cache.hits, model.cache.misses) == (4, 1)


def test_memory_of_1203_classes_10_shots_vitl_is_under_100_mb(tmp_path):
    memory = MemoryBank(1024, {"name": "dinov2_vitl14", "input_size": 518, "dim": 1024})
    generator = torch.Generator().manual_seed(0)
    feats = [torch.randn(10, 1024, generator=generator) for _ in range(1203)]
    memory.set(list(range(1, 1204)), ["class_{}".format(i) for i in range(1203)], feats)
    path = save_memory(memory, str(tmp_path / "lvis_memory.pth"))
    assert os.path.getsize(path) < 100 * 2**20
    reloaded = load_memory(path, like=memory)
    assert torch.equal(reloaded.instance_features, memory.instance_features)
    assert reloaded.class_names == memory.class_names
