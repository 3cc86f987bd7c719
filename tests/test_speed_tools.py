"""tools/benchmark.py on the tiny model: the report is complete, with one run against a sweep."""
import json
import os
import sys

from common import REPO, TINY_CONFIG

sys.path.insert(0, os.path.join(REPO, "tools"))
import benchmark  # noqa: E402


def test_benchmark_reports_stages_memory_and_a_one_pass_sweep(random_weights, synthetic, tmp_path):
    sam2, dinov2 = random_weights
    report = benchmark.main([
        "--config-file", TINY_CONFIG, "--num-images", "2", "--sweep", "2",
        "--output", str(tmp_path), "--target-sizes", "150x100", "40x30",
        "--register", "bench_r", *synthetic["refs"], "--register", "bench_t", *synthetic["targets"],
        "DATASETS.REFERENCE", '("bench_r",)', "DATASETS.TEST", '("bench_t",)',
        "MODEL.REFSEG.SAM2.WEIGHTS", sam2, "MODEL.REFSEG.ENCODER.WEIGHTS", dinov2,
        "MODEL.REFSEG.NMS_THRESH", "1.0", "DATALOADER.NUM_WORKERS", "1",
    ])
    with open(os.path.join(str(tmp_path), "benchmark.json")) as f:
        saved = json.load(f)
    assert saved["inference"]["images"] == 2
    stages = saved["inference"]["per_image_s"]
    assert list(stages) == ["image_loading", "dinov2", "sam2_image_encoder",
                            "sam2_prompt_decoding", "feature_pooling", "classification_nms",
                            "mask_upsampling", "soft_merging"]
    assert all(seconds >= 0 for seconds in stages.values())
    assert list(saved["peak_memory"]) == ["model_build", "memory_fill", "inference", "sweep"]
    for phase in saved["peak_memory"].values():
        assert phase["cpu_rss_peak_mib"] >= phase["cpu_rss_start_mib"] > 0
    sizes = saved["target_sizes"]
    assert list(sizes) == ["150x100", "40x30"]
    assert all(r["images"] == 1 and r["peak_memory"]["cpu_rss_peak_mib"] > 0 for r in sizes.values())
    swept = saved["sweep"]
    assert (swept["runs"], swept["images"]) == (2, 2)
    assert swept["sweep_over_single_run"] == swept["sweep_s"] / swept["single_run_s"] > 0
    assert list(swept["sweep_phases"]["matching_s"]) == ["1shot_seed0", "1shot_seed1"]
    assert swept["single_run_phases"]["runs"] == 1 and swept["sweep_phases"]["passes"] == 1
    assert [f for f in os.listdir(str(tmp_path)) if f.startswith("sweep_")] == []   # removed
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
    for a, b in zip(single, batched):
        assert torch.equal(a.pred_classes, b.pred_classes)
        assert torch.allclose(a.scores, b.scores, atol=1e-4)


def test_compile_flag_compiles_what_runs_without_recompiling_per_image(random_weights, synthetic, tmp_path):
    """DINOv2 forward_features, the SAM 2 image encoder, the decoder's transformer and
    upscaling: 4 frames on the first image, none more on the next ones (eager backend: the
    tracing and guards of torch.compile without code generation)."""
    import torch
    from common import register, tiny_cfg
    from detectron2.data import DatasetCatalog
    from torch._dynamo.utils import counters

    from refseg_d2 import RefSegTargetMapper, RefSegTrainer

    torch._dynamo.reset()
    counters.clear()
    cfg = tiny_cfg(random_weights, tmp_path, [
        "MODEL.REFSEG.ACCEL.COMPILE", "eager",
        "MODEL.REFSEG.SAM2.DECODER", "shared"])
    model = RefSegTrainer.build_model(cfg)
    mapper = RefSegTargetMapper(cfg)
    dicts = DatasetCatalog.get(register("compile_t", synthetic["targets"]))[:3]
    frames = []
    with torch.no_grad():
        for d in dicts:
            model.compute_proposals([mapper(d)])
            frames.append((counters["frames"]["ok"], counters["stats"]["unique_graphs"]))
    assert frames[0] == (4, 4)
    assert frames[1:] == [frames[0]] * 2
    assert not counters["recompiles"]


def test_tf32_flag_switches_cuda_matmuls_and_convolutions_inside_the_forwards_only():
    import warnings

    import torch

    from refseg_d2.modeling.precision import precision

    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    try:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")   # autocast "cuda" on a machine without CUDA
            with precision("cuda", None, tf32=False):
                assert not torch.backends.cuda.matmul.allow_tf32
            with precision("cuda", None, tf32=True):
                assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
        assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before
