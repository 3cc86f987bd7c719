"""
``OUTPUT_DIR/report.html`` of an evaluation run: one self-contained page (images embedded as
base64 PNG, no script, nothing fetched) with the metrics, the per-class AP sorted, the time per
stage and peak memory, the reference set (shots per class and the sheet of reference crops) and
a gallery of the target images with the best and the worst recall, predictions next to ground
truth.

Every section is built on its own: one that fails is replaced by a note naming the error, with
a warning in the log, and the page is still written.
"""
import datetime
import logging
import math
import os
import resource
import sys

import torch

from ..utils.files import atomic_write
from . import html as h
from .gallery import gallery, results_file
from .references import memory_crop_sheet, shots_per_class

logger = logging.getLogger(__name__)

REPORT_NAME = "report.html"


def results_per_dataset(cfg, results):
    """{test dataset: {task: {metric: value}}}: Detectron2 unwraps the results of one dataset."""
    names = list(cfg.DATASETS.TEST)
    if len(names) == 1 and set(results) != set(names):
        return {names[0]: results}
    return dict(results)


def _task_metrics(task_results):
    return {k: v for k, v in task_results.items() if "-" not in k}


def metrics_section(per_dataset):
    parts = []
    for name, results in per_dataset.items():
        tasks = [t for t, r in results.items() if isinstance(r, dict)]
        keys = list(dict.fromkeys(k for t in tasks for k in _task_metrics(results[t])))
        rows = [[k] + [h.number(results[t].get(k), 2) for t in tasks] for k in keys]
        parts.append("<h3>{}</h3>".format(h.esc(name)) if len(per_dataset) > 1 else "")
        parts.append(h.table(["metric"] + tasks, rows, numeric=range(1, len(tasks) + 1)))
    return "".join(parts)


def per_class_ap(task_results):
    """[(class name, AP)] of the "AP-<class>" keys, highest first, NaN (no ground truth) last."""
    items = [(k[3:], float(v)) for k, v in task_results.items()
             if k.startswith("AP-") and isinstance(v, (int, float))]
    return sorted(items, key=lambda cv: (math.isnan(cv[1]), -cv[1] if not math.isnan(cv[1])
                                         else 0.0, cv[0]))


def per_class_section(per_dataset):
    parts = []
    for name, results in per_dataset.items():
        tables = []
        for task, res in results.items():
            if not isinstance(res, dict):
                continue
            items = per_class_ap(res)
            if not items:
                continue
            rows = [[c, h.number(ap, 1), h.bar(ap / 100.0)] for c, ap in items]
            tables.append("<div><h3>{} {}</h3>{}</div>".format(
                h.esc(name), h.esc(task), h.table(["class", "AP", ""], rows, numeric=[1])))
        parts.append('<div class="cols">{}</div>'.format("".join(tables)) if tables else
                     h.paragraph("{}: no per-class AP in the results.".format(name), "note"))
    return "".join(parts)


def peak_memory(device):
    """[(what, bytes)]: CUDA allocator peaks on a GPU, else the process's peak RSS (getrusage)."""
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        return [("peak GPU memory allocated (torch.cuda.max_memory_allocated)",
                 torch.cuda.max_memory_allocated(device)),
                ("peak GPU memory reserved (torch.cuda.max_memory_reserved)",
                 torch.cuda.max_memory_reserved(device))]
    scale = 1 if sys.platform == "darwin" else 1024   # ru_maxrss: bytes on macOS, KiB on Linux
    return [("peak RSS of this process (getrusage)",
             resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale),
            ("peak RSS of its largest finished child process (data loader workers)",
             resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * scale)]


def _size(num_bytes):
    return "{:.2f} GiB".format(num_bytes / 2 ** 30) if num_bytes >= 2 ** 30 else \
        "{:.1f} MiB".format(num_bytes / 2 ** 20)


def timing_section(timer, device):
    per_image = timer.per_image()
    total = sum(per_image.values())
    rows = [[stage, h.number(sec, 4), h.number(timer.totals[stage], 2),
             h.number(100.0 * sec / total if total else 0.0, 1), h.bar(sec / total if total else 0)]
            for stage, sec in per_image.items()]
    rows.append(["total", h.number(total, 4), h.number(sum(timer.totals.values()), 2), "100.0",
                 h.Raw("")])
    memory_rows = [[what, _size(b)] for what, b in peak_memory(device)]
    return (h.paragraph("{} target images timed on this process (the main process of a "
                        "multi-process run times its own share).".format(timer.num_images))
            + h.table(["stage", "s / image", "total s", "%", ""], rows, numeric=[1, 2, 3])
            + h.table(["peak memory", ""], memory_rows, numeric=[1]))


def references_section(cfg, memory):
    rows = [[cid, name, shots] for cid, name, shots in shots_per_class(memory)]
    body = (h.paragraph("Reference datasets: {}".format(", ".join(cfg.DATASETS.REFERENCE) or
                                                         "(memory loaded from MODEL.WEIGHTS)"))
            + h.table(["category id", "class", "shots"], rows, numeric=[0, 2]))
    if not any(memory.provenance):
        return body + h.paragraph("The memory records no reference sources: no crop sheet.",
                                  "note")
    sheet, _ = memory_crop_sheet(memory)
    return body + h.figure(sheet, "Reference crops with their masks (box-only references: their "
                           "box); caption: leave-one-out similarity to the rest of the class, "
                           "outliers framed in red.", "reference crops")


def gallery_section(cfg, output_dir, count, score_thresh):
    parts = []
    for name in cfg.DATASETS.TEST:
        if not os.path.isfile(results_file(output_dir, name)):
            parts.append(h.paragraph("{}: no predictions file ({}).".format(
                name, results_file(output_dir, name)), "note"))
            continue
        g = gallery(name, output_dir, count, 0.5, score_thresh)
        parts.append("<h3>{}</h3>".format(h.esc(name)))
        parts.append(h.paragraph(
            "Recall at IoU 0.5 (mask IoU) of the predictions with score >= {:.2f}, the ones "
            "drawn; {} images with ground truth, mean recall {}. Left: ground truth, right: "
            "predictions.".format(score_thresh, g["scored"], h.number(g["mean_recall"], 3))))
        for title, entries in (("Best", g["best"]), ("Worst", g["worst"])):
            parts.append("<h4>{} recall</h4>".format(title))
            for e in entries:
                caption = "{} (image {}): recall {} ({} of {} instances)".format(
                    os.path.basename(e["file_name"]), e["image_id"], h.number(e["recall"], 2),
                    e["matched"], e["total"])
                parts.append(h.figure(e["image"], caption, os.path.basename(e["file_name"])))
    return "".join(parts)


def summary_section(cfg, device):
    rows = [
        ["written", datetime.datetime.now().isoformat(timespec="seconds")],
        ["output folder", cfg.OUTPUT_DIR],
        ["test datasets", ", ".join(cfg.DATASETS.TEST)],
        ["reference datasets", ", ".join(cfg.DATASETS.REFERENCE) or "-"],
        ["memory weights (MODEL.WEIGHTS)", cfg.MODEL.WEIGHTS or "-"],
        ["encoder", "{} at {} px".format(cfg.MODEL.REFSEG.ENCODER.NAME,
                                         cfg.MODEL.REFSEG.ENCODER.INPUT_SIZE)],
        ["SAM 2", "{} at {} px".format(cfg.MODEL.REFSEG.SAM2.CONFIG,
                                       cfg.MODEL.REFSEG.SAM2.INPUT_SIZE)],
        ["device", str(device)],
        ["torch", torch.__version__],
    ]
    return h.table(None, rows)


def _given(value, what):
    if value is None:
        raise ValueError("no {} (neither given nor held by the model)".format(what))
    return value


def _guarded(title, anchor, build):
    try:
        return h.section(title, build(), anchor)
    except Exception as e:
        logger.warning("Run report: the section %r failed (%s: %s); the report is written "
                       "without it", title, type(e).__name__, e, exc_info=True)
        return h.section(title, h.paragraph("This section failed: {}: {}".format(
            type(e).__name__, e), "failed"), anchor)


def write_run_report(cfg, model, results, output_dir=None, memory=None, timer=None,
                     gallery_count=3, score_thresh=0.5):
    """
    Write ``report.html`` of a finished evaluation run.

    Args:
        cfg: the run's config (DATASETS.TEST / REFERENCE, OUTPUT_DIR, MODEL.*).
        model (RefSeg or None): the evaluated model: its ``memory`` and ``timer`` are reported
            unless ``memory`` / ``timer`` are given.
        results (dict): what ``RefSegTrainer.test`` returned (one dataset's results, or one
            entry per test dataset).
        output_dir (str or None): default ``cfg.OUTPUT_DIR``; the predictions are read from
            its ``inference/<dataset>/coco_instances_results.json``.
        memory (MemoryBank or None): the run's memory (e.g. one run of a sweep).
        timer (StageTimer or None): the run's stage times.
        gallery_count (int): best and worst images shown per test dataset.
        score_thresh (float): predictions drawn and counted in the gallery's recall.
    Returns:
        str: the path of the report.
    """
    output_dir = output_dir or cfg.OUTPUT_DIR
    model = getattr(model, "module", model)
    memory = memory if memory is not None else getattr(model, "memory", None)
    timer = timer if timer is not None else getattr(model, "timer", None)
    device = cfg.MODEL.DEVICE
    per_dataset = results_per_dataset(cfg, results or {})
    sections = [
        _guarded("Run", "run", lambda: summary_section(cfg, device)),
        _guarded("Metrics", "metrics", lambda: metrics_section(per_dataset)),
        _guarded("Per-class AP", "per-class", lambda: per_class_section(per_dataset)),
        _guarded("Time per stage and peak memory", "timing",
                 lambda: timing_section(_given(timer, "timer"), device)),
        _guarded("Reference set", "references",
                 lambda: references_section(cfg, _given(memory, "memory"))),
        _guarded("Gallery: best and worst recall", "gallery",
                 lambda: gallery_section(cfg, output_dir, gallery_count, score_thresh)),
    ]
    title = "refseg_d2 run report: {}".format(", ".join(cfg.DATASETS.TEST))
    path = os.path.join(output_dir, REPORT_NAME)
    text = h.page(title, sections)
    atomic_write(path, lambda f: f.write(text), mode="w")
    os.chmod(path, 0o644)
    logger.info("Run report written to %s", path)
    return path


def try_write_run_report(cfg, model, results, **kwargs):
    """
    :func:`write_run_report` for a run whose metrics are already written: any failure is a
    warning naming it, never an error. Returns the path of the report, or None.
    """
    try:
        return write_run_report(cfg, model, results, **kwargs)
    except Exception as e:
        logger.warning("The run report was not written (%s: %s); the metrics are not affected",
                       type(e).__name__, e, exc_info=True)
        return None
