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

Their side runs in a child process, ``tools/fsod_vfm_theirs.py`` (what it replaces in their
code is listed there).
"""
import argparse
import json
import os
import shutil
import subprocess
import sys

from fsod_vfm_theirs import ENCODER, HUBCONF, SAM2_CONFIG, strip_prediction, write_json

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
THEIRS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fsod_vfm_theirs.py")
OUR_CONFIG = "configs/quick_schedules/fsod_vfm_tiny_cpu.yaml"


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
        rc = subprocess.call([sys.executable, THEIRS, spec_path],
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
    args = parser.parse_args(argv)
    if not (args.their_repo and args.work_dir):
        parser.error("--their-repo and --work-dir are required")
    if bool(args.sam2_checkpoint) != bool(args.dinov2_checkpoint):
        parser.error("give both --sam2-checkpoint and --dinov2-checkpoint, or neither")
    return args


def main(argv=None):
    args = parse_args(argv)
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
