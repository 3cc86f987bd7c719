#!/usr/bin/env python
"""
The authors' side of ``tools/fsod_vfm_parity.py``: FSOD-VFM's own ``main.main()`` run in this
process on the parity inputs described by a spec file (written by the parity tool), with its
proposal network replaced by the boxes file.

    python tools/fsod_vfm_theirs.py SPEC_JSON    (PYTHONPATH = their checkout)

Their code runs unmodified from their checkout (the spec's ``their_repo``); only what cannot run
here is replaced:

- ``chatrex.upn`` (UPN needs a CUDA extension): a stand-in module whose ``UPNWrapper.inference``
  returns the boxes file's proposals of the image (found by its pixels) as UPN returns them
  (``original_xyxy_boxes`` float32 (1, N, 4) at image scale, ``scores`` a float32 tensor
  (1, N, 1), sorted by score), and whose ``filter`` is their own ``UPNWrapper.filter``, loaded from
  their ``inference_wrapper.py`` with stand-ins for its model imports;
- ``Tensor.cuda`` is a no-op (``metric.py`` moves masks and features with ``.cuda()``);
- DINOv2: a temporary hub directory whose ``hubconf.py`` builds the backbones of the official
  hub (img_size 518, patch 14, LayerScale, no block chunks) with the ``dinov2`` package's
  model code; their loader then loads our checkpoint, and the child checks every tensor arrived
  (their loader uses ``strict=False`` and only warns on a missing file);
- SAM 2: ``model.sam2.get_sam2_model_cfg_and_ckpt_path`` returns the SAM 2.1 Hiera-T config and our
  checkpoint (their build, ``apply_postprocessing=True`` and ``SAM2ImagePredictor``, is kept);
- ``metric.run_coco_eval`` keeps the prediction list instead of evaluating it;
- ``support_util.compute_prototype_weights`` and ``metric.graph_diffusion_ios`` are wrapped to
  record what they return (unchanged).
"""
import hashlib
import importlib.util
import json
import os
import sys
import types

SAM2_CONFIG = "configs/sam2.1/sam2.1_hiera_t.yaml"
ENCODER = "dinov2_vits14"
# their run scripts' settings (run_scripts/*.sh), with the models of the tiny check
THEIR_ARGS = ["--model_version", ENCODER, "--feat_extractor_name", "DINOV2",
              "--sam2_model_type", "tiny", "--dinov2_image_size", "630", "--min_threshold", "0.01",
              "--diffusion_steps", "30", "--alp", "0.3", "--lamb", "0.5", "--device", "cpu"]
HUBCONF = '''"""Hub entry points: the official DINOv2 hub backbones, from the dinov2 package."""
from dinov2.models import vision_transformer as _vits

dependencies = ["torch"]


def _backbone(arch, pretrained, **extra):
    if pretrained:
        raise ValueError("random-init backbones only: the caller loads the weights")
    return getattr(_vits, arch)(img_size=518, patch_size=14, init_values=1.0, block_chunks=0,
                                **extra)


def dinov2_vits14(pretrained=False, **kw):
    return _backbone("vit_small", pretrained, **kw)


def dinov2_vitb14(pretrained=False, **kw):
    return _backbone("vit_base", pretrained, **kw)


def dinov2_vitl14(pretrained=False, **kw):
    return _backbone("vit_large", pretrained, **kw)


def dinov2_vitg14(pretrained=False, **kw):
    return _backbone("vit_giant2", pretrained, ffn_layer="swiglufused", **kw)
'''

def plain(v):
    """A NumPy / torch scalar as the Python number it holds; Python numbers unchanged."""
    return v.item() if hasattr(v, "item") else v


def strip_prediction(p):
    """A prediction reduced to the compared keys, values unchanged (their boxes stay ints)."""
    return {"image_id": plain(p["image_id"]), "category_id": plain(p["category_id"]),
            "bbox": [plain(v) for v in p["bbox"]], "score": float(p["score"])}


def write_json(path, data, indent=None):
    with open(path, "w") as f:
        json.dump(data, f, indent=indent)
    return path


def stand_in_modules():
    """
    Stand-ins for what their ``chatrex/upn/inference_wrapper.py`` imports to build UPN (mmengine,
    the UPN model code), and the ``chatrex.upn`` package that ``main.py`` imports UPNWrapper
    from. Building UPN through them raises.
    """
    def unavailable(*args, **kwargs):
        raise RuntimeError("UPN is replaced by a boxes file in the parity check")

    def module(name, package=False, **attrs):
        m = types.ModuleType(name)
        if package:
            m.__path__ = []
        m.__dict__.update(attrs)
        return m

    mods = {
        "mmengine": module("mmengine", Config=types.SimpleNamespace(fromfile=unavailable)),
        "chatrex": module("chatrex", package=True),
        "chatrex.upn": module("chatrex.upn", package=True, build_architecture=unavailable),
        "chatrex.upn.transforms": module("chatrex.upn.transforms", package=True),
        "chatrex.upn.transforms.transform": module("chatrex.upn.transforms.transform"),
        "chatrex.upn.models": module("chatrex.upn.models", package=True),
        "chatrex.upn.models.module": module(
            "chatrex.upn.models.module", nested_tensor_from_tensor_list=unavailable),
    }
    for name, m in mods.items():
        parent, _, child = name.rpartition(".")
        if parent:
            setattr(mods[parent], child, m)
    return mods


def load_their_filter(their_repo):
    """
    Their ``UPNWrapper.filter`` (the function itself), from their inference_wrapper.py loaded
    with :func:`stand_in_modules` installed. Returns (the stand-in chatrex.upn module, filter).
    """
    mods = stand_in_modules()
    sys.modules.update(mods)
    path = os.path.join(their_repo, "chatrex", "upn", "inference_wrapper.py")
    spec = importlib.util.spec_from_file_location("chatrex.upn.inference_wrapper", path)
    wrapper = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(wrapper)
    return mods["chatrex.upn"], wrapper.UPNWrapper.filter


def pixel_key(image):
    """Identifies a PIL image by its RGB pixels and size."""
    rgb = image.convert("RGB")
    return "{}x{}:{}".format(rgb.size[0], rgb.size[1], hashlib.sha1(rgb.tobytes()).hexdigest())


def read_proposals(boxes_json):
    """image_id -> (XYXY float32 (N, 4), scores float32 (N,)) of a COCO-results boxes file; XYXY
    = (x, y, x + w, y + h) computed in float64, then cast."""
    import numpy as np

    with open(boxes_json) as f:
        rows = json.load(f)
    grouped = {}
    for r in rows:
        x, y, w, h = r["bbox"]
        grouped.setdefault(r["image_id"], []).append((x, y, x + w, y + h, r["score"]))
    return {i: (np.array([b[:4] for b in v], dtype=np.float32),
                np.array([b[4] for b in v], dtype=np.float32)) for i, v in grouped.items()}


def boxes_file_upn(their_filter, proposals, image_keys, calls):
    """
    A UPNWrapper class that answers from the boxes file: ``inference`` returns the proposals of
    the image (``image_keys``: pixel key -> image id) in UPN's output format, sorted by score as
    UPN sorts them; ``filter`` is theirs. Each inference appends (image id, prompt type, number
    of boxes) to ``calls``.
    """
    import numpy as np
    import torch

    class BoxesFileUPN:
        filter = their_filter

        def __init__(self, ckpt_path):
            self.ckpt_path = ckpt_path     # unused: no UPN weights are loaded

        def inference(self, image, prompt_type):
            image_id = image_keys[pixel_key(image)]
            empty = (np.zeros((0, 4), np.float32), np.zeros((0,), np.float32))
            boxes, scores = proposals.get(image_id, empty)
            scores = torch.from_numpy(scores)
            order = scores.argsort(descending=True)
            calls.append({"image_id": image_id, "prompt_type": prompt_type, "boxes": len(boxes)})
            return {"original_xyxy_boxes": boxes[order.numpy()][None],
                    "scores": scores[order][:, None][None]}

    return BoxesFileUPN


def checked_dinov2_loader(loader):
    """Their DINOv2 loader, followed by a check that the model holds exactly the checkpoint's
    tensors (their loader loads with ``strict=False`` and only warns on a missing file)."""
    import torch

    def load(*args, **kwargs):
        model, transform = loader(*args, **kwargs)
        state = torch.load(kwargs["pretrained"], map_location="cpu")
        mine = model.state_dict()
        bad = sorted(set(mine) ^ set(state)) + [k for k in state if k in mine
                                                 and not torch.equal(mine[k], state[k])]
        if bad:
            raise RuntimeError("DINOv2 weights not loaded as written: {}".format(bad[:10]))
        return model, transform

    return load


def sam2_paths_for(ckpt):
    """A stand-in for their get_sam2_model_cfg_and_ckpt_path: SAM 2.1 Hiera-T at ``ckpt``."""
    def get_sam2_model_cfg_and_ckpt_path(model_type="large"):
        if model_type != "tiny":
            raise ValueError("the parity check runs SAM 2.1 tiny, got {!r}".format(model_type))
        return SAM2_CONFIG, ckpt

    return get_sam2_model_cfg_and_ckpt_path


def record_internals(support_util, metric, calls):
    """
    Wrap their support-mask, prototype and graph-diffusion functions to record, for locating a
    difference: ``support_masks`` (per reference instance in their order {"box" XYXY, "mask"
    bool at image size}), ``prototypes`` (their L2-normalised (C, K) prototype matrix, the class
    names) and, per target image, ``diffusion`` entries {"image_id", "masks" (n, h*w) bool at the
    feature grid, "labels", "pi"}. Returns the dict they fill.
    """
    internals = {"support_masks": [], "prototypes": None, "diffusion": []}
    prototypes, diffusion = support_util.compute_prototype_weights, metric.graph_diffusion_ios
    support_mask = support_util.extract_masks_from_support

    def recorded_support_mask(predictor, image, box, *args, **kwargs):
        mask = support_mask(predictor, image, box, *args, **kwargs)
        internals["support_masks"].append({"box": list(box), "mask": mask.astype(bool)})
        return mask

    def recorded_prototypes(*args, **kwargs):
        feat, classes = prototypes(*args, **kwargs)
        internals["prototypes"] = (feat.detach().cpu().clone(), list(classes))
        return feat, classes

    def recorded_diffusion(masks, labels, *args, **kwargs):
        pi = diffusion(masks, labels, *args, **kwargs)
        internals["diffusion"].append({
            "image_id": calls[-1]["image_id"], "masks": masks.reshape(len(masks), -1).bool().cpu(),
            "labels": labels.cpu().clone(), "pi": pi.detach().cpu().clone()})
        return pi

    support_util.extract_masks_from_support = recorded_support_mask
    support_util.compute_prototype_weights = recorded_prototypes
    metric.graph_diffusion_ios = recorded_diffusion
    return internals


def their_argv(spec):
    """main.py's command line for the child's inputs ``spec``."""
    return ["main.py", "--json_path", spec["support_json"], "--data_dir", spec["image_root"],
            "--test_json", spec["test_json"], "--test_img_dir", spec["image_root"],
            "--repo_or_dir", spec["hub_dir"], "--dinov2_checkpoint_dir", spec["dinov2_dir"],
            "--pred_json", os.path.join(spec["work_dir"], "their_pred_unused.json")] + THEIR_ARGS


def run_their_side(spec_path):
    """
    Child process: run their ``main.main()`` with the replacements of the module docstring;
    write {"predictions", "upn_calls", "threads"} to the spec's ``out`` and what
    :func:`record_internals` records to ``their_internals.pt`` beside it.
    """
    import torch
    from PIL import Image

    with open(spec_path) as f:
        spec = json.load(f)
    torch.set_num_threads(spec["threads"])
    upn_package, their_filter = load_their_filter(spec["their_repo"])
    with open(spec["test_json"]) as f:
        images = json.load(f)["images"]
    keys = {pixel_key(Image.open(os.path.join(spec["image_root"], im["file_name"]))): im["id"]
            for im in images}
    assert len(keys) == len(images), "two test images have the same pixels"
    calls = []
    upn_package.UPNWrapper = boxes_file_upn(
        their_filter, read_proposals(spec["boxes_json"]), keys, calls)
    torch.Tensor.cuda = lambda self, *args, **kwargs: self
    main_spec = importlib.util.spec_from_file_location(
        "fsod_vfm_main", os.path.join(spec["their_repo"], "main.py"))
    their_main = importlib.util.module_from_spec(main_spec)
    main_spec.loader.exec_module(their_main)
    import metric
    import model.dinov2
    import model.sam2
    import support_util

    for m in (metric, model.dinov2, model.sam2, support_util):
        assert os.path.realpath(m.__file__).startswith(os.path.realpath(spec["their_repo"])), m
    model.sam2.get_sam2_model_cfg_and_ckpt_path = sam2_paths_for(spec["sam2_ckpt"])
    model.dinov2.load_dinov2_model = checked_dinov2_loader(model.dinov2.load_dinov2_model)
    internals = record_internals(support_util, metric, calls)
    captured = []
    metric.run_coco_eval = lambda gt_json, results, *args, **kwargs: captured.extend(results)
    sys.argv = their_argv(spec)
    their_main.main()
    write_json(spec["out"], {"predictions": [strip_prediction(p) for p in captured],
                             "upn_calls": calls, "threads": torch.get_num_threads()})
    torch.save(internals, os.path.join(os.path.dirname(spec["out"]), "their_internals.pt"))
    return 0


if __name__ == "__main__":
    sys.exit(run_their_side(sys.argv[1]))
