"""
Evaluating many reference sets ("runs", e.g. the shots x seeds of a benchmark) in one pass over
the test images.

The runs of a sweep differ only in their memory: what a target image yields before references
are involved (SAM 2's proposals and their DINOv2 features, ``RefSeg.compute_proposals``) is the
same for all of them. :func:`run_sweep` fills the memory of every unfinished run first
(:func:`build_memories`: a reference image is encoded once for all the runs that hold it), then
reads each test dataset once: per batch, the proposals are computed once and matched against the
memory of every run (``RefSeg.match_batch``), whose own evaluators process the outputs. A run's
predictions and metrics are those of ``tools/train_net.py --eval-only`` with its references
(tested bit for bit), and it writes what train_net writes in its OUTPUT_DIR: the memory file,
``inference/<test dataset>/`` (e.g. coco_instances_results.json) and ``metrics.json``.

Each run follows the contract of Detectron2's ``inference_on_dataset``: evaluator.reset, process
per batch, evaluate; every process of a ``launch`` calls evaluate and the results are on the main
process. ``metrics.json`` is written atomically once all of a run's results are in: it marks the
run finished, and finished runs are neither filled nor matched, so the same sweep run again after
a crash (even SIGKILL) redoes only the others.

Runs per pass: until it is evaluated, a run's evaluator holds its predictions (COCO: about 1 KB
per detection, so 100 detections x 5000 images ~ 0.5 GB per run) and its ground truth, so
``runs_per_pass`` bounds how many runs share one pass; each further pass computes the proposals
again.
"""
import logging
import os
import time
from collections import OrderedDict, namedtuple
from contextlib import ExitStack

import torch
from detectron2.evaluation import DatasetEvaluators, print_csv_format
from detectron2.evaluation.evaluator import inference_context
from detectron2.utils import comm
from detectron2.utils.logger import log_every_n_seconds
from tqdm import tqdm

from ..modeling.memory import save_memory
from ..utils.distributed import unwrap_model
from ..utils.timing import StageTimer
from .defaults import METRICS_FILE, write_metrics
from .memory_filling import check_memory_matches
from .memory_sets import build_memories
from .trainer import RefSegTrainer, load_test_datasets

logger = logging.getLogger(__name__)



class SweepRun(namedtuple("SweepRun", ["name", "references", "output_dir"])):
    """
    One run of a sweep.

    Attributes:
        name (str): unique within the sweep (logs, timings).
        references (tuple[str]): its reference datasets (its DATASETS.REFERENCE).
        output_dir (str): its OUTPUT_DIR.
    """

    __slots__ = ()

    @property
    def metrics_file(self):
        return os.path.join(self.output_dir, METRICS_FILE)


def pending_runs(runs):
    """The runs without a metrics.json, as the main process sees them (same on every process)."""
    done = None
    if comm.is_main_process():
        done = [r.name for r in runs if os.path.isfile(r.metrics_file)]
    done = set(comm.all_gather(done)[0])
    return [r for r in runs if r.name not in done]


def run_sweep(cfg, model, runs, runs_per_pass=0, on_finished=None):
    """
    Evaluate every unfinished run of ``runs`` on cfg.DATASETS.TEST. Every process must call it.

    Args:
        cfg (CfgNode): the sweep's config; its DATASETS.REFERENCE and OUTPUT_DIR are not used.
        model (RefSeg): its own memory is neither used nor changed.
        runs (list[SweepRun]): with unique names.
        runs_per_pass (int): runs sharing one pass over the test images (0: all).
        on_finished (callable or None): called on the main process as
            ``on_finished(run, results, memory)`` once a run's metrics.json is written (e.g. its
            report); an exception there is logged, never raised.
    Returns:
        results (OrderedDict): run name -> what ``RefSegTrainer.test`` returns for it (the results
            of the one test dataset, or test dataset -> results), for the runs done now; the
            results are on the main process, empty dicts elsewhere.
        timings (dict): see :func:`sweep_timings`.
    """
    names = [r.name for r in runs]
    if len(set(names)) != len(names):
        raise ValueError("The runs of a sweep need distinct names, got {}".format(names))
    if runs_per_pass < 0:
        raise ValueError("runs_per_pass must be >= 0 (0: all runs in one pass), got {}".format(
            runs_per_pass))
    refseg = unwrap_model(model)
    start = time.perf_counter()
    tests = load_test_datasets(cfg, refseg)
    todo = pending_runs(runs)
    logger.info("Sweep of %d runs: %d finished (not redone), %d to run: %s", len(runs),
                len(runs) - len(todo), len(todo), [r.name for r in todo])
    timer, results = StageTimer(), OrderedDict()
    if not todo:
        return results, sweep_timings(timer, [], 0, time.perf_counter() - start)
    memories = fill_memories(cfg, refseg, todo, timer)
    refseg.timer.reset()
    size = runs_per_pass or len(todo)
    groups = [todo[i : i + size] for i in range(0, len(todo), size)]
    for g, group in enumerate(groups):
        results.update(evaluate_runs(cfg, refseg, group, memories, timer,
                                     "pass {}/{}".format(g + 1, len(groups)), tests, on_finished))
    logger.info("Per-stage time (matching summed over the runs): %s", refseg.timer.summary())
    timings = sweep_timings(timer, todo, len(groups), time.perf_counter() - start)
    log_timings(timings)
    return results, timings


def fill_memories(cfg, model, runs, timer):
    """
    The memory of each run (saved to its OUTPUT_DIR/<MEMORY.SAVE_NAME>.pth unless SAVE_NAME is
    "", as train_net does), checked against every test dataset. Returns OrderedDict run name -> MemoryBank.
    """
    save = bool(cfg.MODEL.REFSEG.MEMORY.SAVE_NAME) and comm.is_main_process()
    with timer.stage("memory", model.device):
        built = build_memories(cfg, model, OrderedDict((r.name, r.references) for r in runs),
                               with_provenance=save)
    for run in runs:
        for test in cfg.DATASETS.TEST:
            try:
                check_memory_matches(built[run.name][0], test)
            except ValueError as e:
                raise ValueError("Run {} (references {}): {}".format(
                    run.name, ", ".join(run.references), e)) from e
    if save:
        for run in runs:
            name = cfg.MODEL.REFSEG.MEMORY.SAVE_NAME + ".pth"
            save_memory(built[run.name][0], os.path.join(run.output_dir, name))
    return OrderedDict((run.name, built[run.name][0]) for run in runs)


def build_run_evaluator(cfg, test, run):
    """The evaluator(s) of ``run`` on ``test``, writing to <run OUTPUT_DIR>/inference/<test>."""
    folder = os.path.join(run.output_dir, "inference", test)
    evaluator = RefSegTrainer.build_evaluator(cfg, test, output_folder=folder)
    return DatasetEvaluators(evaluator) if isinstance(evaluator, list) else evaluator


def evaluate_runs(cfg, model, runs, memories, timer, what, tests, on_finished=None):
    """
    One pass over each test dataset for ``runs``; a run's metrics.json is written (main process)
    right after its last evaluation. ``tests``: OrderedDict test dataset -> its dicts (from
    ``load_test_dataset``). Returns OrderedDict run name -> results.
    """
    per_test = OrderedDict((run.name, OrderedDict()) for run in runs)
    results = OrderedDict()
    for t, (test, dicts) in enumerate(tests.items()):
        evaluators = OrderedDict()
        for run in runs:
            with timer.stage("evaluation/" + run.name):
                evaluators[run.name] = build_run_evaluator(cfg, test, run)
                evaluators[run.name].reset()
        match_pass(cfg, model, (test, dicts), runs, memories, evaluators, timer, what)
        for run in runs:
            with timer.stage("evaluation/" + run.name):
                res = evaluators[run.name].evaluate() or {}
            per_test[run.name][test] = res
            if comm.is_main_process():
                if not isinstance(res, dict):
                    raise TypeError("The evaluator of {} on {} returned {!r}, not a dict".format(
                        run.name, test, res))
                logger.info("Evaluation results of %s on %s in csv format:", run.name, test)
                print_csv_format(res)
            if t == len(tests) - 1:
                run_results = per_test[run.name]
                results[run.name] = (
                    list(run_results.values())[0] if len(run_results) == 1 else run_results
                )
                if comm.is_main_process():
                    path = write_metrics(run.output_dir, results[run.name])
                    logger.info("%s: metrics written to %s", run.name, path)
                    _after_run(on_finished, run, results[run.name], memories[run.name])
        del evaluators
    comm.synchronize()
    return results


def _after_run(on_finished, run, results, memory):
    """Call ``on_finished`` for a finished run; its failure is a warning (metrics are written)."""
    if on_finished is None:
        return
    try:
        on_finished(run, results, memory)
    except Exception as e:
        logger.warning("After run %s: %s: %s (its metrics.json is written)", run.name,
                       type(e).__name__, e, exc_info=True)


def match_pass(cfg, model, dataset, runs, memories, evaluators, timer, what):
    """
    Read a test dataset once (``dataset``: its name and dicts): per batch the proposals once,
    then each run's matching and processing.
    """
    test, dicts = dataset
    loader = RefSegTrainer.build_test_loader(cfg, test, dicts)
    total, device = len(loader), model.device
    logger.info("%s: %d runs on %s (%d batches)", what, len(runs), test, total)
    start = time.perf_counter()
    with ExitStack() as stack:
        stack.enter_context(inference_context(model))
        stack.enter_context(torch.no_grad())
        bar = stack.enter_context(tqdm(total=total, desc=test, disable=not comm.is_main_process()))
        batches = iter(loader)
        for idx in range(total):
            with timer.stage("image_loading"):
                inputs = next(batches)
            with timer.stage("proposals", device):
                proposals = model.compute_proposals(inputs)
            timer.num_images += len(inputs)
            for run in runs:
                with timer.stage("matching/" + run.name, device):
                    outputs = model.match_batch(inputs, proposals, memories[run.name])
                with timer.stage("evaluation/" + run.name):
                    evaluators[run.name].process(inputs, outputs)
            bar.update(1)
            seconds = (time.perf_counter() - start) / (idx + 1)
            message = "{} on {}: {}/{} batches, {:.3f} s/batch for {} runs, ETA {:.0f}s".format(
                what, test, idx + 1, total, seconds, len(runs), seconds * (total - idx - 1))
            log_every_n_seconds(logging.INFO, message, n=30, name=__name__)


def sweep_timings(timer, runs, passes, total_s):
    """
    Wall-clock seconds of a sweep (this process).

    Returns:
        dict: "runs", "passes", "images" (test images read, all passes), "total_s",
        "memory_s" (all memories), "image_loading_s", "proposals_s", "matching_s" and
        "evaluation_s" (run name -> seconds), "one_run_s" (the estimated cost of one run alone:
        the image loading and proposals of one pass, the mean run's matching and evaluation
        and memory_s / runs) and "sweep_over_one_run".
    """
    t = timer.totals
    per = {kind: OrderedDict((r.name, t.get("{}/{}".format(kind, r.name), 0.0)) for r in runs)
           for kind in ("matching", "evaluation")}
    n = max(len(runs), 1)
    one = ((t.get("image_loading", 0.0) + t.get("proposals", 0.0)) / max(passes, 1)
           + sum(per["matching"].values()) / n
           + sum(per["evaluation"].values()) / n + t.get("memory", 0.0) / n)
    return {
        "runs": len(runs), "passes": passes, "images": timer.num_images, "total_s": total_s,
        "memory_s": t.get("memory", 0.0), "image_loading_s": t.get("image_loading", 0.0),
        "proposals_s": t.get("proposals", 0.0), "matching_s": per["matching"],
        "evaluation_s": per["evaluation"], "one_run_s": one,
        "sweep_over_one_run": total_s / one if one > 0 else float("nan"),
    }


def log_timings(timings):
    n = max(timings["runs"], 1)
    match, evaluation = sum(timings["matching_s"].values()), sum(timings["evaluation_s"].values())
    logger.info(
        "Sweep of %d runs in %d pass(es), %d test images read: memory filling %.1fs, image "
        "loading %.1fs, proposals %.1fs, matching %.1fs (%.2fs per run), evaluation %.1fs "
        "(%.2fs per run); total %.1fs = %.2f x one run (%.1fs: the proposals of one pass, one "
        "run's matching and evaluation, 1/%d of the memory filling)",
        timings["runs"], timings["passes"], timings["images"], timings["memory_s"],
        timings["image_loading_s"], timings["proposals_s"], match, match / n, evaluation,
        evaluation / n, timings["total_s"], timings["sweep_over_one_run"], timings["one_run_s"], n,
    )
    for name in timings["matching_s"]:
        logger.info("  %s: matching %.2fs, evaluation %.2fs", name, timings["matching_s"][name],
                    timings["evaluation_s"][name])
