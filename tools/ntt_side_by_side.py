#!/usr/bin/env python
"""
Side by side with the authors' NTT code: seconds per target image of their paper model and of
refseg_d2 on the same random-weight checkpoints and the same synthetic images, in one invocation,
and a one-for-one comparison of the two sides' predictions, so that the speed figure is at
identical predictions.

    python tools/ntt_side_by_side.py --their-repo PATH/TO/no-time-to-train --work-dir DIR \\
        [--points-per-side 32] [--threads 2] [--warmup 1] [--num-images 3] [--score-tol 1e-3] \\
        [--skip-theirs | --skip-ours]

Inputs: random SAM 2 Hiera-T and DINOv2 ViT-S/14 checkpoints in the official formats
(``write_random_checkpoints``, reused when present in work-dir/weights; both sides load the same
files) and the images of tools/benchmark.py's demo data (``make_split``: 6 reference images with
12 references of 3 classes, targets of 128 x 96, as many as --warmup + --num-images). SAM 2 runs
at 1024 px and DINOv2 at 518 px, the paper's sizes, on both sides.

The two sides run one after the other, never together, each in its own child process limited to
--threads threads (OMP_NUM_THREADS, MKL_NUM_THREADS): first theirs, ``tools/ntt_theirs.py``
(their Lightning module through its fill_memory, postprocess_memory and test modes, their
template's settings; what it replaces in their code is listed there), then ours,
``tools/benchmark.py`` on ``configs/quick_schedules/refseg_tiny_cpu.yaml`` with the checkpoints,
the sizes and the settings their run reports (points per side, predicted-IoU threshold, NMS
threshold, detections, reference context ratio; printed with our options) and the default
(low-rank shared) SAM 2 decoder.

Timed, per target image after the warm-up images: the model's forward. Theirs: their
``seg_model`` forward, which is their ``test_step`` without encoding the results as RLE (also
reported); ours: the model call (benchmark's ``model_s``: the stages of ``model.timer`` and what
lies between them). Image loading and memory filling are reported apart and are not in the ratio.

Compared, on the timed images: ``refseg_d2.evaluation.parity.compare_predictions`` (same class,
same box, score within --score-tol) and the mask agreement of
``refseg_d2.evaluation.agreement.match_share`` (same class, mask IoU >= 0.98, score within 1e-3).
A detection of theirs with a NaN score and an empty mask (a mask empty at full size, which their
soft merging divides by; refseg_d2 drops it: docs/DEVIATIONS.md, crash fixes) is left out of the
comparison and listed, with the comparison that keeps it.

Writes work-dir/side_by_side.json (timings, settings, our options, the comparison), theirs.json
and ours.json (the timed images' predictions), the two logs and our benchmark.json. Exit status:
0 when the predictions match, 1 when they do not, 2 when a side fails.
"""
import argparse
import json
import math
import os
import subprocess
import sys

from fsod_vfm_parity import tail, thread_env
from fsod_vfm_theirs import write_json

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
THEIRS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ntt_theirs.py")
BENCHMARK = os.path.join(os.path.dirname(os.path.abspath(__file__)), "benchmark.py")
OUR_CONFIG = "configs/quick_schedules/refseg_tiny_cpu.yaml"
SAM2_CONFIG = "configs/sam2/sam2_hiera_t.yaml"
ENCODER = "dinov2_vits14"
DATA_SIZE = (128, 96)    # tools/benchmark.py's demo data (make_demo_dataset)
REFS, TARGETS = "ntt_sbs_refs", "ntt_sbs_targets"
# their template's test settings (method reference section 5), used when their side is skipped
THEIR_DEFAULTS = {"points_per_side": 32, "iou_thr": 0.4, "nms_thr": 0.5, "num_out_instance": 100,
                  "context_ratio": 0.2, "target_image_size": 1024, "encoder_img_size": 518}
# their setting -> our config key of the same meaning
OUR_KEYS = [("target_image_size", "MODEL.REFSEG.SAM2.INPUT_SIZE"),
            ("encoder_img_size", "MODEL.REFSEG.ENCODER.INPUT_SIZE"),
            ("points_per_side", "MODEL.REFSEG.POINTS_PER_SIDE"),
            ("iou_thr", "MODEL.REFSEG.PRED_IOU_THRESH"),
            ("nms_thr", "MODEL.REFSEG.NMS_THRESH"),
            ("num_out_instance", "MODEL.REFSEG.MAX_DETECTIONS"),
            ("context_ratio", "MODEL.REFSEG.MEMORY.CONTEXT_RATIO")]


def prepare(work_dir, num_targets):
    """Checkpoints (reused when present) and the synthetic data; returns a dict of paths:
    sam2_ckpt, dinov2_ckpt, refs_json, refs_root, targets_json, targets_root."""
    from refseg_d2.testing.random_weights import write_random_checkpoints
    from refseg_d2.testing.synthetic import make_split

    weights = os.path.join(work_dir, "weights")
    sam2 = os.path.join(weights, "random_{}.pt".format(
        os.path.splitext(os.path.basename(SAM2_CONFIG))[0]))
    dinov2 = os.path.join(weights, "random_{}_pretrain.pth".format(ENCODER))
    if not (os.path.exists(sam2) and os.path.exists(dinov2)):
        sam2, dinov2 = write_random_checkpoints(weights, SAM2_CONFIG, ENCODER, sam2_input_size=1024)
    data = os.path.join(work_dir, "data")
    refs = make_split(data, "refs", 6, seed=0, size=DATA_SIZE, overlap_every=0)
    targets = make_split(data, "targets", num_targets, seed=1, size=DATA_SIZE, first_image_id=101)
    return {"sam2_ckpt": os.path.abspath(sam2), "dinov2_ckpt": os.path.abspath(dinov2),
            "refs_json": os.path.abspath(refs[0]), "refs_root": os.path.abspath(refs[1]),
            "targets_json": os.path.abspath(targets[0]),
            "targets_root": os.path.abspath(targets[1])}


def run_child(command, log, threads, pythonpath, cwd):
    """Run ``command`` with ``threads`` threads and PYTHONPATH ``pythonpath``, output to
    ``log``; returns its exit status."""
    env = dict(thread_env(threads), PYTHONPATH=pythonpath)
    with open(log, "w") as f:
        return subprocess.call(command, cwd=cwd, env=env, stdout=f, stderr=subprocess.STDOUT)


def run_theirs(args, paths, work_dir):
    """Their side in a child process; returns its output dict, or None when it fails."""
    cwd = os.path.join(work_dir, "their_cwd")
    os.makedirs(cwd, exist_ok=True)
    spec = dict(paths, their_repo=os.path.abspath(args.their_repo), work_dir=work_dir,
                points_per_side=args.points_per_side, warmup=args.warmup, threads=args.threads,
                out=os.path.join(work_dir, "theirs_raw.json"))
    spec_path = write_json(os.path.join(work_dir, "theirs_spec.json"), spec, indent=1)
    log = os.path.join(work_dir, "theirs.log")
    rc = run_child([sys.executable, THEIRS, spec_path], log, args.threads, spec["their_repo"], cwd)
    if rc != 0 or not os.path.exists(spec["out"]):
        print("their side failed (exit {}), {}:\n{}".format(rc, log, tail(log)))
        return None
    with open(spec["out"]) as f:
        return json.load(f)


def our_opts(paths, settings):
    """Our config overrides: the checkpoints, the datasets, the SAM 2 decoder and, for each of
    OUR_KEYS, their value of the setting."""
    opts = ["MODEL.REFSEG.SAM2.WEIGHTS", paths["sam2_ckpt"],
            "MODEL.REFSEG.ENCODER.WEIGHTS", paths["dinov2_ckpt"],
            "MODEL.REFSEG.SAM2.DECODER", "shared",
            "DATASETS.REFERENCE", '("{}",)'.format(REFS), "DATASETS.TEST", '("{}",)'.format(TARGETS)]
    for theirs, ours in OUR_KEYS:
        opts += [ours, str(settings[theirs])]
    return opts


def our_command(args, paths, work_dir, settings):
    """tools/benchmark.py's command line for our side."""
    return ([sys.executable, BENCHMARK, "--config-file", OUR_CONFIG,
             "--num-images", str(args.num_images), "--warmup", str(args.warmup),
             "--output", os.path.join(work_dir, "ours_benchmark"),
             "--predictions", os.path.join(work_dir, "ours_raw.json"),
             "--register", REFS, paths["refs_json"], paths["refs_root"],
             "--register", TARGETS, paths["targets_json"], paths["targets_root"]]
            + our_opts(paths, settings))


def run_ours(args, paths, work_dir, settings):
    """Our side in a child process; returns (benchmark report, predictions), or None when it
    fails."""
    log = os.path.join(work_dir, "ours.log")
    rc = run_child(our_command(args, paths, work_dir, settings), log, args.threads, REPO, REPO)
    report = os.path.join(work_dir, "ours_benchmark", "benchmark.json")
    predictions = os.path.join(work_dir, "ours_raw.json")
    if rc != 0 or not (os.path.exists(report) and os.path.exists(predictions)):
        print("our side failed (exit {}), {}:\n{}".format(rc, log, tail(log)))
        return None
    with open(report) as f, open(predictions) as g:
        return json.load(f), json.load(g)


def target_images(paths):
    """{image_id: (height, width)} of the targets, in id order."""
    with open(paths["targets_json"]) as f:
        images = json.load(f)["images"]
    return {im["id"]: (im["height"], im["width"]) for im in sorted(images, key=lambda i: i["id"])}


def their_timing(theirs):
    """Their seconds per timed image (mean over the images after the warm-up)."""
    timed = [im for im in theirs["images"] if not im["warmup"]]
    n = max(len(timed), 1)
    return {"images": len(timed),
            "forward_s": sum(im["forward_s"] for im in timed) / n,
            "test_step_s": sum(im["step_s"] for im in timed) / n,
            "image_loading_s": sum(im["load_s"] for im in timed) / n,
            "per_image_forward_s": [im["forward_s"] for im in timed],
            "memory_fill_s": theirs["fill_memory_s"] + theirs["postprocess_memory_s"],
            "memory_references": theirs["memory_references"],
            "peak_rss_inference_mib": theirs["peak_memory"]["inference"]["cpu_rss_peak_mib"],
            "threads": theirs["threads"]}


def our_timing(report):
    """Our seconds per timed image, from tools/benchmark.py's report."""
    inference = report["inference"]
    n = max(inference["images"], 1)
    stages = dict(inference["per_image_s"])
    loading = stages.pop("image_loading", 0.0)
    return {"images": inference["images"], "forward_s": inference["model_s"] / n,
            "stages_s": stages, "stages_total_s": sum(stages.values()),
            "image_loading_s": loading, "memory_fill_s": report["memory_fill_s"],
            "memory_references": report["memory_references"],
            "peak_rss_inference_mib": report["peak_memory"]["inference"]["cpu_rss_peak_mib"],
            "threads": report.get("threads")}


def mask_agreement(theirs, ours, images):
    """match_share of the two prediction lists over ``images`` ({id: (h, w)}), theirs the
    reference; their category ids are mapped to indices in sorted id order."""
    from refseg_d2.evaluation.agreement import match_share
    from refseg_d2.utils.visualization import coco_results_to_instances

    ids = sorted({p["category_id"] for p in theirs + ours})
    to_index = {c: i for i, c in enumerate(ids)}

    def per_image(predictions):
        return [coco_results_to_instances([p for p in predictions if p["image_id"] == i], h, w,
                                          to_index) for i, (h, w) in images.items()]

    return match_share(per_image(theirs), per_image(ours))


def empty_nan(prediction):
    """A prediction of theirs with a NaN score and an empty mask: their code gives one for a mask
    that is empty at full size (0 / 0 in the merging), where refseg_d2 drops the detection
    (docs/DEVIATIONS.md, crash fixes)."""
    import pycocotools.mask as mask_utils

    return math.isnan(prediction["score"]) and mask_utils.area(prediction["segmentation"]) == 0


def compare(theirs, ours, images, score_tol):
    """
    The comparison on ``images``, their NaN-score detections with empty masks
    (:func:`empty_nan`) left out: {"summary", "result", "mask_agreement", "left_out" (those
    detections of theirs), "summary_all" (the comparison with them)}.
    """
    from refseg_d2.evaluation.parity import compare_predictions, summary_line

    theirs = [p for p in theirs if p["image_id"] in images]
    ours = [p for p in ours if p["image_id"] in images]
    left_out = [p for p in theirs if empty_nan(p)]
    kept = [p for p in theirs if not empty_nan(p)]
    result = compare_predictions(kept, ours, score_tol=score_tol)
    everything = compare_predictions(theirs, ours, score_tol=score_tol)
    return {"summary": summary_line(result, score_tol=score_tol), "result": result,
            "mask_agreement": mask_agreement(kept, ours, images),
            "left_out": [{k: p[k] for k in ("image_id", "category_id", "bbox", "score")}
                         for p in left_out],
            "summary_all": summary_line(everything, score_tol=score_tol)}


def ratio(a, b):
    return a / b if a and b else None


def format_table(theirs, ours):
    """The timing table (either side may be None)."""
    from tabulate import tabulate

    def cell(side, key, fmt="{:.3f}"):
        return fmt.format(side[key]) if side is not None else "-"

    both = theirs is not None and ours is not None
    r = ratio(theirs["forward_s"], ours["forward_s"]) if both else None
    rows = [["s / target image (model forward)", cell(theirs, "forward_s"), cell(ours, "forward_s"),
             "{:.2f} x".format(r) if r else "-"],
            ["s / target image (image loading)", cell(theirs, "image_loading_s"),
             cell(ours, "image_loading_s"), ""],
            ["memory filling, s in all", cell(theirs, "memory_fill_s"), cell(ours, "memory_fill_s"),
             ""],
            ["peak RSS during inference, MiB", cell(theirs, "peak_rss_inference_mib", "{:.0f}"),
             cell(ours, "peak_rss_inference_mib", "{:.0f}"), ""],
            ["torch threads", cell(theirs, "threads", "{}"), cell(ours, "threads", "{}"), ""]]
    lines = [tabulate(rows, headers=["", "theirs", "ours", "theirs / ours"], tablefmt="pipe",
                      disable_numparse=True, colalign=("left", "right", "right", "right"))]
    if theirs is not None:
        lines.append("theirs: test_step {:.3f} s / image (forward and RLE encoding); forward per "
                     "image: {}".format(theirs["test_step_s"], ", ".join(
                         "{:.3f}".format(s) for s in theirs["per_image_forward_s"])))
    if ours is not None:
        lines.append("ours, per stage (s / image): {} (total {:.3f})".format(", ".join(
            "{} {:.3f}".format(k, v) for k, v in ours["stages_s"].items()),
            ours["stages_total_s"]))
    return "\n".join(lines)


def format_settings(settings, opts):
    """Their settings next to our options, one line each."""
    ours = dict(zip(opts[0::2], opts[1::2]))
    lines = ["{} = {!r}  <->  {} {}".format(t, settings[t], o, ours[o]) for t, o in OUR_KEYS]
    if "testing_point_bs" in settings:
        lines.append("testing_point_bs = {} (batching only; our POINTS_PER_BATCH is the config's, "
                     "ours decodes every prompt)".format(settings["testing_point_bs"]))
    return "\n".join(lines)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--their-repo", help="a checkout of the authors' no-time-to-train")
    parser.add_argument("--work-dir", required=True,
                        help="folder for weights, data, logs and results")
    parser.add_argument("--points-per-side", type=int, default=32,
                        help="point grid of both sides (the paper's 32)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads of each side")
    parser.add_argument("--warmup", type=int, default=1, help="untimed target images first")
    parser.add_argument("--num-images", type=int, default=3, help="timed target images")
    parser.add_argument("--score-tol", type=float, default=1e-3,
                        help="largest score difference of a matched prediction")
    skip = parser.add_mutually_exclusive_group()
    skip.add_argument("--skip-theirs", action="store_true",
                      help="run our side only, with their template's settings")
    skip.add_argument("--skip-ours", action="store_true", help="run their side only")
    args = parser.parse_args(argv)
    if not args.skip_theirs and not args.their_repo:
        parser.error("--their-repo is required (or --skip-theirs)")
    if args.points_per_side < 1 or args.threads < 1 or args.num_images < 1 or args.warmup < 0:
        parser.error("--points-per-side, --threads and --num-images must be >= 1, "
                     "--warmup >= 0")
    return args


def main(argv=None):
    args = parse_args(argv)
    work_dir = os.path.abspath(args.work_dir)
    os.makedirs(work_dir, exist_ok=True)
    paths = prepare(work_dir, args.warmup + args.num_images)
    images = target_images(paths)
    timed = dict(list(images.items())[args.warmup:])
    out = {"command": ["tools/ntt_side_by_side.py"] + list(sys.argv[1:] if argv is None else argv),
           "threads": args.threads, "points_per_side": args.points_per_side,
           "warmup": args.warmup, "num_images": args.num_images, "timed_images": list(timed),
           "inputs": paths}
    status, theirs, ours, timing = 0, None, None, {}
    settings = dict(THEIR_DEFAULTS, points_per_side=args.points_per_side)
    if not args.skip_theirs:
        theirs = run_theirs(args, paths, work_dir)
        their_timed = None if theirs is None else [
            im["image_id"] for im in theirs["images"] if not im["warmup"]]
        if their_timed is not None and their_timed != list(timed):
            print("their side timed images {}, not {}".format(their_timed, list(timed)))
            theirs = None
        if theirs is None:
            status = 2
        else:
            settings = theirs["settings"]
            timing["theirs"] = their_timing(theirs)
            out["their_changes"] = theirs["changed"]
            write_json(os.path.join(work_dir, "theirs.json"),
                       [p for p in theirs["predictions"] if p["image_id"] in timed])
            print("their changes to their template:\n  " + "\n  ".join(theirs["changed"]))
    opts = our_opts(paths, settings)
    out.update(settings=settings, our_config=OUR_CONFIG, our_opts=opts)
    print("settings (theirs <-> our options):\n" + format_settings(settings, opts))
    if not args.skip_ours and status == 0:
        ran = run_ours(args, paths, work_dir, settings)
        if ran is None:
            status = 2
        else:
            report, ours = ran
            timing["ours"] = our_timing(report)
            write_json(os.path.join(work_dir, "ours.json"), ours)
    out["timing"] = timing
    if "theirs" in timing and "ours" in timing:
        out["theirs_over_ours"] = ratio(timing["theirs"]["forward_s"], timing["ours"]["forward_s"])
    print(format_table(timing.get("theirs"), timing.get("ours")))
    if theirs is not None and ours is not None:
        out["parity"] = compare(theirs["predictions"], ours, timed, args.score_tol)
        parity = out["parity"]
        for m in parity["result"]["count_mismatch"]:
            print("count mismatch on image {image_id}: theirs {theirs}, ours {ours}".format(**m))
        for w in parity["result"]["worst_pairs"][:3]:
            print("largest score differences: {}".format(w))
        if parity["left_out"]:
            print("left out: {} detection(s) of theirs with a NaN score and an empty mask (a mask "
                  "empty at full size; refseg_d2 drops it, docs/DEVIATIONS.md): {}".format(
                      len(parity["left_out"]), parity["left_out"]))
            print("with them: " + parity["summary_all"])
        print("NTT side by side: " + parity["summary"])
        print("mask agreement (same class, mask IoU >= 0.98, score within 1e-3): {:.3f}".format(
            parity["mask_agreement"]))
        status = 0 if parity["result"]["passed"] else 1
    print("JSON:", write_json(os.path.join(work_dir, "side_by_side.json"), out, indent=1))
    return status


if __name__ == "__main__":
    sys.exit(main())
