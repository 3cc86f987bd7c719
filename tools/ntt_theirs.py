#!/usr/bin/env python
"""
The authors' side of ``tools/ntt_side_by_side.py``: NTT's paper model,
``Sam2MatchingBaselineNoAMG`` inside their Lightning module ``Sam2MatcherLightningModel``, run in
this process through the three test modes of their pipeline (``fill_memory``,
``postprocess_memory``, ``test``) on the inputs of a spec file written by the side-by-side tool,
timing every target image.

    python tools/ntt_theirs.py SPEC_JSON    (PYTHONPATH = their checkout)

The settings are their template's (``no_time_to_train/pl_configs/matching_cdfsod_template.yaml``,
the custom-dataset template: 32 x 32 points in batches of 256, predicted-IoU filter 0.4, NMS 0.5,
100 detections, context ratio 0.2, references at 518, targets at 1024) with only the spec's data,
checkpoints, models and point grid put in (see :func:`their_config`, which returns what it
changed). Their code runs unmodified from their checkout; only what cannot run here is replaced:

- ``pytorch_lightning`` (not installed): a stand-in module whose ``LightningModule`` is
  ``torch.nn.Module``; ``trainer.test`` is :func:`run_mode`'s loop (the module in eval mode, their
  ``setup("test")``, their ``test_dataloader()``, their ``test_step`` per batch, as Lightning
  runs one device), and the checkpoint their CLI writes between two modes is the module itself,
  kept in memory (their ``load_state_dict`` would restore the same tensors); Lightning's
  ``seed_everything(42)`` is the seeding of ``random``, NumPy and torch with 42;
- ``ot``, ``tidecv`` (not installed): stand-in modules (imported, never called on this path:
  ``tidecv.Data`` only by their ``evaluate``, which is not run; the stand-in raises);
- ``sklearn.decomposition.PCA`` (not installed): a stand-in with ``fit``, ``mean_`` and
  ``components_`` (NumPy SVD); their ``postprocess_memory`` fills the inert buffers
  ``mem_pca_mean`` / ``mem_pca_components`` with it, which ``forward_test`` never reads;
- the ``dinov2`` package: a stand-in package whose path holds their ``dinov2/dinov2`` folder and
  their ``dinov2`` folder, so that both their ``import dinov2.dinov2.models...`` and the vendored
  code's own ``from dinov2.layers import ...`` load their vendored copy (their README installs it
  with ``pip install -e``), not the ``dinov2`` package installed here;
- the device: their ``build_sam2_video_predictor`` call leaves the device at its default
  ``"cuda"``; the name in their model module is bound to the same function with
  ``device="cpu"``;
- DINOv2 ViT-S/14: their ``encoder_predefined_cfgs`` has ``dinov2_large`` only; the entry
  ``dinov2_small`` is theirs with ``model_size="vit_small"`` and ``feat_dim=384``;
- ``testing_point_bs``: their 256 unless it does not divide the number of prompts (e.g. a grid
  under 16 x 16); then the largest divisor of both, since their loop drops the remainder
  (refseg_d2 decodes every prompt);
- ``data_load_cfgs.workers``: 0 (the template's 4 would decode images on the same cores during
  the timed forward; refseg_d2 runs with ``DATALOADER.NUM_WORKERS 0`` too);
- measurement only: a forward pre-hook and hook on their ``seg_model`` time each forward; the
  process's peak memory comes from ``refseg_d2/utils/peak_memory.py`` loaded from its file.

Their DINOv2 loader loads with ``strict=False``; the child checks that the encoder holds exactly
the checkpoint's tensors (SAM 2's loader is strict itself).
"""
import copy
import functools
import importlib.machinery
import importlib.util
import json
import math
import os
import random
import sys
import time
import types

from fsod_vfm_theirs import write_json

THEIR_TEMPLATE = "no_time_to_train/pl_configs/matching_cdfsod_template.yaml"
SAM2_CONFIG = "sam2_hiera_t.yaml"      # their vendored SAM 2 config of Hiera-T
ENCODER = "dinov2_small"               # the stand-in entry of encoder_predefined_cfgs
PEAK_MEMORY = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                           "refseg_d2", "utils", "peak_memory.py")


class PCA:
    """Stand-in for ``sklearn.decomposition.PCA``: ``fit`` sets ``mean_`` and ``components_``
    (the top right-singular vectors of the centred data), in the data's dtype."""

    def __init__(self, n_components):
        self.n_components = n_components

    def fit(self, x):
        import numpy as np

        x = np.asarray(x)
        self.mean_ = x.mean(axis=0)
        _, _, vt = np.linalg.svd(x - self.mean_, full_matrices=False)
        self.components_ = vt[: self.n_components].astype(x.dtype)
        return self


def stand_in_modules(their_repo):
    """The stand-in modules of the docstring: pytorch_lightning, ot, tidecv, sklearn and the
    dinov2 package layout. Returns {name: module}."""
    import torch

    def module(name, package=False, path=(), **attrs):
        m = types.ModuleType(name)
        m.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=package)
        if package:
            m.__path__ = m.__spec__.submodule_search_locations = list(path)
        m.__dict__.update(attrs)
        return m

    def unavailable(*args, **kwargs):
        raise RuntimeError("tidecv is not installed: their evaluate() is not run here")

    vendored = os.path.join(their_repo, "dinov2")
    mods = {
        "pytorch_lightning": module("pytorch_lightning", LightningModule=torch.nn.Module),
        "ot": module("ot"),
        "tidecv": module("tidecv", package=True, Data=unavailable),
        "sklearn": module("sklearn", package=True),
        "sklearn.decomposition": module("sklearn.decomposition", PCA=PCA),
        "dinov2": module("dinov2", package=True,
                         path=[os.path.join(vendored, "dinov2"), vendored]),
    }
    mods["sklearn"].decomposition = mods["sklearn.decomposition"]
    return mods


def memory_pkl(refs_json, out_path):
    """
    Their reference list of ``refs_json``, written by their ``coco_to_pkl.convert_coco_to_pkl``
    (``{category id: [{"img_id", "ann_ids"}, ...]}``) with the largest per-class count as the
    shot number. Returns (path, shots); raises unless it lists every annotation of the file once
    (their converter pads smaller classes with random duplicates, which refseg_d2 would not
    have).
    """
    import pickle

    from no_time_to_train.dataset.coco_to_pkl import convert_coco_to_pkl

    with open(refs_json) as f:
        annotations = json.load(f)["annotations"]
    counts = {}
    for a in annotations:
        counts[a["category_id"]] = counts.get(a["category_id"], 0) + 1
    shots = max(counts.values())
    convert_coco_to_pkl(refs_json, out_path, shots)
    with open(out_path, "rb") as f:
        listed = pickle.load(f)
    used = sorted(e["ann_ids"][0] for entries in listed.values() for e in entries)
    if used != sorted(a["id"] for a in annotations):
        raise ValueError("their memory needs the same number of references per class, each "
                         "annotation on its own image entry; got {}".format(counts))
    return out_path, shots


def category_names(json_path):
    with open(json_path) as f:
        return [c["name"] for c in sorted(json.load(f)["categories"], key=lambda c: c["id"])]


def their_config(spec, pkl, shots):
    """
    (model_cfg, dataset_cfgs, data_load_cfgs, changed): their template's ``init_args`` with the
    spec's inputs put in; ``changed`` lists every value changed, as "key: template -> used".
    """
    import yaml

    with open(os.path.join(spec["their_repo"], THEIR_TEMPLATE)) as f:
        init = yaml.safe_load(f)["model"]["init_args"]
    names = category_names(spec["refs_json"])
    points = spec["points_per_side"]
    batch = init["model_cfg"]["sam2_infer_cfgs"]["testing_point_bs"]
    if (points * points) % batch:
        batch = math.gcd(batch, points * points)
    changes = [
        ("model_cfg.sam2_cfg_file", SAM2_CONFIG), ("model_cfg.sam2_ckpt_path", spec["sam2_ckpt"]),
        ("model_cfg.encoder_cfg.name", ENCODER),
        ("model_cfg.encoder_ckpt_path", spec["dinov2_ckpt"]),
        ("model_cfg.memory_bank_cfg.category_num", len(names)),
        ("model_cfg.memory_bank_cfg.length", shots),
        ("model_cfg.sam2_infer_cfgs.points_per_side", points),
        ("model_cfg.sam2_infer_cfgs.testing_point_bs", batch),
        ("dataset_cfgs.fill_memory.root", spec["refs_root"]),
        ("dataset_cfgs.fill_memory.json_file", spec["refs_json"]),
        ("dataset_cfgs.fill_memory.memory_pkl", pkl),
        ("dataset_cfgs.fill_memory.memory_length", shots),
        ("dataset_cfgs.fill_memory.cat_names", names),
        ("dataset_cfgs.test.root", spec["targets_root"]),
        ("dataset_cfgs.test.json_file", spec["targets_json"]),
        ("dataset_cfgs.test.cat_names", names),
        ("data_load_cfgs.workers", 0),
    ]
    changed = []
    for dotted, value in changes:
        *parents, key = dotted.split(".")
        node = functools.reduce(lambda d, k: d[k], parents, init)
        if node.get(key) != value:
            changed.append("{}: {!r} -> {!r}".format(dotted, node.get(key), value))
        node[key] = value
    return init["model_cfg"], init["dataset_cfgs"], init["data_load_cfgs"], changed


def install_their_modules(spec):
    """Import their Lightning module with the stand-ins in place, bind the CPU device and the
    ViT-S entry in their model module; returns (Sam2MatcherLightningModel, their model module)."""
    sys.modules.update(stand_in_modules(spec["their_repo"]))
    from no_time_to_train.models import Sam2MatchingBaseline_noAMG as noamg
    from no_time_to_train.pl_wrapper.sam2matcher_pl import Sam2MatcherLightningModel

    for m in (noamg, sys.modules["sam2"], sys.modules["dinov2.dinov2"]):
        here = os.path.realpath(m.__file__)
        assert here.startswith(os.path.realpath(spec["their_repo"]) + os.sep), here
    noamg.build_sam2_video_predictor = functools.partial(noamg.build_sam2_video_predictor,
                                                         device="cpu")
    large = noamg.encoder_predefined_cfgs["dinov2_large"]
    noamg.encoder_predefined_cfgs[ENCODER] = dict(large, model_size="vit_small", feat_dim=384)
    return Sam2MatcherLightningModel, noamg


def check_encoder_weights(encoder, path):
    """The encoder holds exactly the checkpoint's tensors (their loader is not strict)."""
    import torch

    state = torch.load(path, map_location="cpu")
    mine = encoder.state_dict()
    bad = sorted(set(mine) ^ set(state)) + [k for k in state if k in mine
                                             and not torch.equal(mine[k], state[k])]
    if bad:
        raise RuntimeError("DINOv2 weights not loaded as written: {}".format(bad[:10]))


def run_mode(module, mode, on_batch=None):
    """Lightning's test loop for one of their test modes: eval mode, their setup("test"), their
    test_dataloader(), their test_step per batch; ``on_batch(index, seconds waiting for the
    loader, seconds in test_step)`` after each. Returns the seconds of the whole loop."""
    module.test_mode = mode
    module.eval()
    start = time.perf_counter()
    module.setup("test")
    batches = iter(module.test_dataloader())
    index = 0
    while True:
        t0 = time.perf_counter()
        try:
            batch = next(batches)
        except StopIteration:
            break
        t1 = time.perf_counter()
        module.test_step(batch, index)
        if on_batch is not None:
            on_batch(index, t1 - t0, time.perf_counter() - t1)
        index += 1
    return time.perf_counter() - start


def forward_timer(seg_model):
    """Hooks on their seg_model recording the seconds of each forward into the returned list."""
    seconds, started = [], []
    seg_model.register_forward_pre_hook(lambda m, args: started.append(time.perf_counter()))
    seg_model.register_forward_hook(
        lambda m, args, out: seconds.append(time.perf_counter() - started.pop()))
    return seconds


def load_peak_memory():
    """refseg_d2/utils/peak_memory.py loaded from its file (it needs only torch), so that
    refseg_d2 and the sam2 it imports stay out of this process."""
    spec = importlib.util.spec_from_file_location("refseg_peak_memory", PEAK_MEMORY)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.PeakMemory


def their_settings(module, datasets):
    """The settings their model and datasets hold, by the side-by-side tool's names."""
    m = module.seg_model
    return {"points_per_side": m.points_per_side, "testing_point_bs": m.testing_point_bs,
            "iou_thr": m.iou_thr, "nms_thr": m.nms_thr, "num_out_instance": m.num_out_instance,
            "cls_num_per_mask": m.cls_num_per_mask, "context_ratio": datasets["fill_memory"]["context_ratio"],
            "ref_image_size": datasets["fill_memory"]["image_size"],
            "target_image_size": datasets["test"]["image_size"],
            "encoder_img_size": m.encoder_img_size, "sam_img_size": m.sam_img_size}


def run_their_side(spec_path):
    """
    Child process: build their module, fill and postprocess the memory, run the test mode over
    the targets with per-image times; write {"predictions" (their encoded results, RLE masks
    included), "images" (per target: image_id, warmup, load_s, forward_s, step_s), "settings",
    "changed", "build_s", "fill_memory_s", "postprocess_memory_s", "peak_memory", "threads",
    "torch"} to the spec's ``out``.
    """
    import numpy as np
    import torch

    with open(spec_path) as f:
        spec = json.load(f)
    torch.set_num_threads(spec["threads"])
    for seed_fn in (random.seed, np.random.seed, torch.manual_seed):
        seed_fn(42)
    PeakMemory = load_peak_memory()
    lightning_module, _ = install_their_modules(spec)
    pkl, shots = memory_pkl(spec["refs_json"], os.path.join(spec["work_dir"], "their_memory.pkl"))
    model_cfg, datasets, loading, changed = their_config(spec, pkl, shots)
    used = copy.deepcopy(datasets)
    peaks = {}
    with PeakMemory("cpu") as peak:
        start = time.perf_counter()
        module = lightning_module(model_cfg, datasets, loading, test_mode="fill_memory")
        build_s = time.perf_counter() - start
    peaks["model_build"] = peak.result
    check_encoder_weights(module.seg_model.encoder, spec["dinov2_ckpt"])
    with PeakMemory("cpu") as peak:
        fill_s = run_mode(module, "fill_memory")
        post_s = run_mode(module, "postprocess_memory")
    peaks["memory_fill"] = peak.result
    forward_s = forward_timer(module.seg_model)
    images = []

    def on_batch(index, load_s, step_s):
        images.append({"image_id": int(module.eval_dataset.img_ids[index]),
                       "warmup": index < spec["warmup"], "load_s": load_s,
                       "forward_s": forward_s[-1], "step_s": step_s})
        print("their image {image_id}: forward {forward_s:.2f} s, test_step {step_s:.2f} s, "
              "loading {load_s:.2f} s{w}".format(w=" (warm-up)" if images[-1]["warmup"] else "",
                                                 **images[-1]), flush=True)

    with PeakMemory("cpu") as peak:
        run_mode(module, "test", on_batch)
    peaks["inference"] = peak.result
    predictions = [p for per_image in module.output_queue for p in per_image]
    write_json(spec["out"], {
        "predictions": predictions, "images": images,
        "settings": their_settings(module, used), "changed": changed,
        "build_s": build_s, "fill_memory_s": fill_s, "postprocess_memory_s": post_s,
        "memory_references": int(module.seg_model.mem_fill_counts.sum()),
        "peak_memory": peaks, "threads": torch.get_num_threads(), "torch": torch.__version__})
    return 0


if __name__ == "__main__":
    sys.exit(run_their_side(sys.argv[1]))
