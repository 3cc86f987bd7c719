"""tools/benchmark.py on the tiny model: the report is complete and the sweep uses the cache."""
import json
import os
import sys

from common import REPO, TINY_CONFIG

sys.path.insert(0, os.path.join(REPO, "tools"))
import benchmark  # noqa: E402


def test_benchmark_reports_stages_memory_and_a_cached_sweep(random_weights, synthetic, tmp_path):
    sam2, dinov2 = random_weights
    report = benchmark.main([
        "--config-file", TINY_CONFIG, "--num-images", "2", "--sweep", "2",
        "--output", str(tmp_path),
        "--register", "bench_r", *synthetic["refs"], "--register", "bench_t", *synthetic["targets"],
        "DATASETS.REFERENCE", '("bench_r",)', "DATASETS.TEST", '("bench_t",)',
        "MODEL.REFSEG.SAM2.WEIGHTS", sam2, "MODEL.REFSEG.ENCODER.WEIGHTS", dinov2,
    ])
    with open(os.path.join(str(tmp_path), "benchmark.json")) as f:
        saved = json.load(f)
    assert saved["inference"]["images"] == 2
    stages = saved["inference"]["per_image_s"]
    assert list(stages) == ["image_loading", "dinov2", "sam2_image_encoder",
                            "sam2_prompt_decoding", "feature_pooling", "classification_nms",
                            "mask_upsampling", "soft_merging"]
    assert all(seconds >= 0 for seconds in stages.values())
    assert saved["peak_memory"]["cpu_rss_mib"] > 0
    runs = saved["sweep"]["runs"]
    assert [r["cache_hits"] for r in runs] == [0, 2]
    assert saved["sweep"]["sweep_over_single_run"] > 0
    assert report["memory_references"] == saved["memory_references"]


def _predict(random_weights, synthetic, tmp_path, opts):
    import torch
    from common import register, tiny_cfg
    from detectron2.data import DatasetCatalog

    from refseg_d2 import RefSegTargetMapper, RefSegTrainer, fill_memory

    cfg = tiny_cfg(random_weights, tmp_path, opts)
    model = RefSegTrainer.build_model(cfg)
    fill_memory(cfg, model, [register("accel_refs", synthetic["refs"])])
    mapper = RefSegTargetMapper(cfg)
    inputs = [mapper(d) for d in DatasetCatalog.get(register("accel_t", synthetic["targets"]))[:2]]
    with torch.no_grad():
        return model, [o["instances"] for o in model(inputs)]


def test_bf16_autocast_path_runs_and_returns_fp32_scores(random_weights, synthetic, tmp_path):
    import torch

    _, outs = _predict(random_weights, synthetic, tmp_path, ["MODEL.REFSEG.ACCEL.AMP", "bf16"])
    assert all(o.scores.dtype == torch.float32 and o.pred_masks.dtype == torch.bool for o in outs)


def test_batched_dinov2_gives_the_predictions_of_one_image_at_a_time(random_weights, synthetic, tmp_path):
    import torch

    _, single = _predict(random_weights, synthetic, tmp_path, [])
    model, batched = _predict(random_weights, synthetic, tmp_path,
                              ["MODEL.REFSEG.ACCEL.IMAGES_PER_BATCH", 2])
    assert model.proposal_generator.batch_encoder
    for a, b in zip(single, batched):
        assert torch.equal(a.pred_classes, b.pred_classes)
        assert torch.allclose(a.scores, b.scores, atol=1e-4)


def test_compile_flag_compiles_the_encoders(random_weights, tmp_path):
    from common import tiny_cfg

    from refseg_d2 import RefSegTrainer

    model = RefSegTrainer.build_model(tiny_cfg(random_weights, tmp_path,
                                               ["MODEL.REFSEG.ACCEL.COMPILE", True]))
    assert model.encoder.backbone._compiled_call_impl is not None
    assert model.prompter.sam.image_encoder._compiled_call_impl is not None
