#!/usr/bin/env python
"""
Parity of refseg_d2's FSOD-VFM pipeline with the authors' code, on CPU, on random-weight
checkpoints and synthetic data, with their proposal network (UPN) replaced by a boxes file.

    python tools/fsod_vfm_parity.py --their-repo PATH/TO/FSOD-VFM --work-dir parity_run \\
        [--threads 2] [--seed 0] [--skip-ours | --our-repo DIR] [--reuse-theirs] \\
        [--sam2-checkpoint PT --dinov2-checkpoint PTH] [--write-golden PATH]

Steps: random SAM 2.1 Hiera-T and DINOv2 ViT-S/14 checkpoints; synthetic references, targets,
the support file and the boxes file (``refseg_d2.testing.parity_inputs``); their ``main.main()``
in a child process with the settings of their run scripts (``--diffusion_steps 30 --alp 0.3
--lamb 0.5``, min threshold 0.01, DINOv2 at 630, SAM 2 "tiny"); ours with ``tools/train_net.py
--eval-only``; then :func:`refseg_d2.evaluation.parity.compare_predictions`. Writes
``work-dir/{theirs.json, ours.json, parity.json}``, the logs of both runs and
``their_internals.pt`` (their prototypes; per target image the masks at the feature grid, the
classes and the diffusion result pi: see ``record_internals``). Exit status: 0 on
parity, 1 when the comparison fails, 2 when our run fails (their predictions are still written).

Their code runs unmodified from ``--their-repo``; in the child process only what cannot run
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
import argparse
import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import types

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAM2_CONFIG = "configs/sam2.1/sam2.1_hiera_t.yaml"
ENCODER = "dinov2_vits14"
OUR_CONFIG = "configs/quick_schedules/fsod_vfm_tiny_cpu.yaml"
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


def thread_env(threads):
    """The environment of a child process limited to ``threads`` CPU threads."""
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(threads)
    return env


def tail(path, lines=40):
    """The last ``lines`` lines of a text file."""
    with open(path, errors="replace") as f:
        return "".join(f.readlines()[-lines:])


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


# ---------------------------------------------------------------- their side (child process)

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


# ---------------------------------------------------------------- parent process

def prepare(work_dir, seed, sam2=None, dinov2=None):
    """Checkpoints (``sam2`` / ``dinov2`` when given, else random ones, reused when present) and
    the synthetic inputs. Returns a dict of paths: the :func:`make_parity_inputs` ones plus
    ``sam2_ckpt``, ``dinov2_ckpt`` and ``dinov2_dir`` (holding the DINOv2 checkpoint under the
    name their code builds: <model>_pretrain.pth)."""
    from refseg_d2.testing.parity_inputs import make_parity_inputs
    from refseg_d2.testing.random_weights import write_random_checkpoints

    weights = os.path.join(work_dir, "weights")
    if not (sam2 and dinov2):
        sam2 = os.path.join(weights, "random_sam2.1_hiera_t.pt")
        dinov2 = os.path.join(weights, "random_{}_pretrain.pth".format(ENCODER))
        if not (os.path.exists(sam2) and os.path.exists(dinov2)):
            sam2, dinov2 = write_random_checkpoints(weights, SAM2_CONFIG, ENCODER,
                                                    sam2_input_size=1024)
    sam2, dinov2 = os.path.abspath(sam2), os.path.abspath(dinov2)
    dinov2_dir = os.path.join(weights, "their_dinov2")
    os.makedirs(dinov2_dir, exist_ok=True)
    shutil.copyfile(dinov2, os.path.join(dinov2_dir, ENCODER + "_pretrain.pth"))
    paths = make_parity_inputs(os.path.join(work_dir, "data"), seed=seed)
    paths.update(sam2_ckpt=sam2, dinov2_ckpt=dinov2, dinov2_dir=dinov2_dir)
    return paths


def run_theirs(their_repo, paths, work_dir, threads):
    """Run their side in a child process (their repository first on its path); returns the
    child's output dict, or exits with the log's tail when it fails."""
    hub_dir = os.path.join(work_dir, "their_dinov2_hub")
    os.makedirs(hub_dir, exist_ok=True)
    with open(os.path.join(hub_dir, "hubconf.py"), "w") as f:
        f.write(HUBCONF)
    cwd = os.path.join(work_dir, "their_cwd")
    os.makedirs(cwd, exist_ok=True)
    spec = dict(paths, their_repo=os.path.abspath(their_repo), hub_dir=hub_dir,
                work_dir=work_dir, threads=threads, out=os.path.join(work_dir, "theirs_raw.json"))
    spec_path = write_json(os.path.join(work_dir, "theirs_spec.json"), spec, indent=1)
    env = dict(thread_env(threads), PYTHONPATH=spec["their_repo"])
    log = os.path.join(work_dir, "theirs.log")
    with open(log, "w") as f:
        rc = subprocess.call([sys.executable, os.path.abspath(__file__), "--child-spec", spec_path],
                             cwd=cwd, env=env, stdout=f, stderr=subprocess.STDOUT)
    if rc != 0:
        sys.exit("their side failed (exit {}), {}:\n{}".format(rc, log, tail(log)))
    with open(spec["out"]) as f:
        return json.load(f)


def our_command(paths, output_dir):
    """tools/train_net.py's command line for our run on the parity inputs."""
    return [sys.executable, "tools/train_net.py", "--eval-only", "--no-report",
            "--config-file", OUR_CONFIG,
            "--register", "parity_refs", paths["refs_json"], paths["image_root"],
            "--register", "parity_test", paths["test_json"], paths["image_root"],
            "DATASETS.REFERENCE", '("parity_refs",)', "DATASETS.TEST", '("parity_test",)',
            "MODEL.REFSEG.PROPOSALS.BOXES_FILE", paths["boxes_json"],
            "MODEL.REFSEG.SAM2.WEIGHTS", paths["sam2_ckpt"],
            "MODEL.REFSEG.ENCODER.WEIGHTS", paths["dinov2_ckpt"], "OUTPUT_DIR", output_dir]


def run_ours(paths, work_dir, threads, our_repo):
    """Run ours from the checkout ``our_repo``; returns (predictions, or None when the run fails
    or writes no results file, log path)."""
    output_dir = os.path.join(work_dir, "ours_output")
    shutil.rmtree(output_dir, ignore_errors=True)
    log = os.path.join(work_dir, "ours.log")
    env = dict(thread_env(threads))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (our_repo, env.get("PYTHONPATH")) if p)
    with open(log, "w") as f:
        rc = subprocess.call(our_command(paths, output_dir), cwd=our_repo, env=env, stdout=f,
                             stderr=subprocess.STDOUT)
    results = "coco_instances_results.json"
    candidates = [os.path.join(output_dir, "inference", "parity_test", results),
                  os.path.join(output_dir, "inference", results)]
    found = [c for c in candidates if os.path.exists(c)]
    if rc != 0 or not found:
        return None, log
    with open(found[0]) as f:
        return [strip_prediction(p) for p in json.load(f)], log


def per_image_counts(predictions):
    counts = {}
    for p in predictions:
        counts[p["image_id"]] = counts.get(p["image_id"], 0) + 1
    return dict(sorted(counts.items()))


def write_golden(path, theirs, seed, threads):
    """
    The compact fixture of their predictions, in their order: per prediction image_id,
    category_id, bbox and the score rounded to 1e-6; with what reproduces them
    (``make_parity_inputs(root, seed)``, ``write_random_checkpoints(dir, sam2_config, encoder,
    sam2_input_size=1024)`` with its default seed, the thread count).
    """
    import torch

    rows = [dict(p, score=round(p["score"], 6)) for p in theirs]
    return write_json(path, {
        "made_by": "tools/fsod_vfm_parity.py: the authors' code on CPU, random weights",
        "inputs": {"seed": seed, "sam2_config": SAM2_CONFIG, "encoder": ENCODER,
                   "sam2_input_size": 1024},
        "threads": threads, "torch": torch.__version__, "predictions": rows,
    })


def their_predictions(args, paths, work_dir):
    """Their predictions: run their side, or with --reuse-theirs read work-dir/theirs.json when
    it was made with the same seed, threads and checkpoints (theirs_made_with.json)."""
    theirs_json = os.path.join(work_dir, "theirs.json")
    made_with_json = os.path.join(work_dir, "theirs_made_with.json")
    made_with = {"seed": args.seed, "threads": args.threads, "sam2": paths["sam2_ckpt"],
                 "dinov2": paths["dinov2_ckpt"]}
    if args.reuse_theirs and os.path.exists(theirs_json) and os.path.exists(made_with_json):
        with open(made_with_json) as f:
            if json.load(f) == made_with:
                print("reusing", theirs_json)
                with open(theirs_json) as g:
                    return json.load(g)
    theirs = run_theirs(args.their_repo, paths, work_dir, args.threads)
    with open(paths["test_json"]) as f:
        test_ids = sorted(im["id"] for im in json.load(f)["images"])
    answered = sorted(c["image_id"] for c in theirs["upn_calls"])
    print("their UPN stand-in answered {} of {} test images".format(len(answered), len(test_ids)))
    if answered != test_ids:
        sys.exit("their run did not ask once for each test image's proposals: {}".format(answered))
    write_json(theirs_json, theirs["predictions"])
    write_json(made_with_json, made_with)
    return theirs["predictions"]


def compare_and_report(theirs, ours, work_dir, args):
    """Compare, write parity.json, print the summary; returns the exit status (0 / 1)."""
    from refseg_d2.evaluation.parity import compare_predictions, summary_line

    result = compare_predictions(theirs, ours, score_tol=args.score_tol)
    line = summary_line(result, score_tol=args.score_tol)
    write_json(os.path.join(work_dir, "parity.json"),
               {"summary": line, "threads": args.threads, "seed": args.seed, "result": result,
                "per_image": {"theirs": per_image_counts(theirs), "ours": per_image_counts(ours)}},
               indent=1)
    for m in result["count_mismatch"]:
        print("count mismatch on image {image_id}: theirs {theirs}, ours {ours}".format(**m))
    for w in result["worst_pairs"][:5]:
        print("largest score differences: {}".format(w))
    for side, examples in result["unpaired_examples"].items():
        for e in examples[:5]:
            print("unpaired ({}): {}".format(side, e))
    print("FSOD-VFM parity: " + line)
    if result["passed"] and args.write_golden and args.sam2_checkpoint:
        print("no golden fixture: it pins the random-weight run only")
    elif result["passed"] and args.write_golden:
        print("golden fixture:", write_golden(args.write_golden, theirs, args.seed, args.threads))
    return 0 if result["passed"] else 1


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--their-repo", help="a checkout of the authors' FSOD-VFM repository")
    parser.add_argument("--work-dir", help="folder for weights, data, logs and results")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads of both runs")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data and boxes")
    parser.add_argument("--score-tol", type=float, default=1e-3,
                        help="largest score difference of a matched prediction")
    parser.add_argument("--skip-ours", action="store_true", help="run their side only")
    parser.add_argument("--reuse-theirs", action="store_true",
                        help="reuse work-dir/theirs.json when present (same seed and threads)")
    parser.add_argument("--our-repo", default=REPO,
                        help="the refseg-d2 checkout whose tools/train_net.py runs "
                        "(default: this one)")
    parser.add_argument("--sam2-checkpoint", help="a SAM 2.1 Hiera-T checkpoint (default: random)")
    parser.add_argument("--dinov2-checkpoint",
                        help="a DINOv2 ViT-S/14 checkpoint (default: random; both or neither)")
    parser.add_argument("--write-golden", metavar="PATH",
                        help="after a passed comparison, write their predictions as a fixture")
    parser.add_argument("--child-spec", help=argparse.SUPPRESS)   # internal: their side
    args = parser.parse_args(argv)
    if not args.child_spec and not (args.their_repo and args.work_dir):
        parser.error("--their-repo and --work-dir are required")
    if bool(args.sam2_checkpoint) != bool(args.dinov2_checkpoint):
        parser.error("give both --sam2-checkpoint and --dinov2-checkpoint, or neither")
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.child_spec:
        return run_their_side(args.child_spec)
    work_dir = os.path.abspath(args.work_dir)
    os.makedirs(work_dir, exist_ok=True)
    paths = prepare(work_dir, args.seed, args.sam2_checkpoint, args.dinov2_checkpoint)
    theirs = their_predictions(args, paths, work_dir)
    print("theirs: {} predictions, per image {}".format(len(theirs), per_image_counts(theirs)))
    if args.skip_ours:
        return 0
    ours, log = run_ours(paths, work_dir, args.threads, os.path.abspath(args.our_repo))
    if ours is None:
        print("our run failed or wrote no results ({}); its last lines:\n{}".format(log, tail(log)))
        write_json(os.path.join(work_dir, "parity.json"),
                   {"summary": "our run failed", "log": log}, indent=1)
        return 2
    write_json(os.path.join(work_dir, "ours.json"), ours)
    print("ours: {} predictions, per image {}".format(len(ours), per_image_counts(ours)))
    return compare_and_report(theirs, ours, work_dir, args)


if __name__ == "__main__":
    sys.exit(main())
