"""Per-stage wall-clock timing of the inference pipeline."""
import time
from collections import OrderedDict
from contextlib import contextmanager

import torch


class StageTimer:
    """
    Accumulates wall-clock seconds per named stage. CUDA work is synchronised at stage
    boundaries so that the time lands in the stage that launched it.
    """

    def __init__(self):
        self.reset()

    def reset(self):
        self.totals = OrderedDict()
        self.num_images = 0

    @contextmanager
    def stage(self, name, device=None):
        sync = device is not None and torch.device(device).type == "cuda"
        if sync:
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        try:
            yield
        finally:
            if sync:
                torch.cuda.synchronize(device)
            self.totals[name] = self.totals.get(name, 0.0) + time.perf_counter() - start

    def per_image(self):
        """Returns {stage: mean seconds per image} over the images counted so far."""
        n = max(self.num_images, 1)
        return OrderedDict((k, v / n) for k, v in self.totals.items())

    def summary(self):
        """One line: mean seconds per image for each stage, and their total."""
        per = self.per_image()
        parts = ["{}={:.3f}s".format(k, v) for k, v in per.items()]
        return "{} images, per image: {} (total {:.3f}s)".format(
            self.num_images, ", ".join(parts), sum(per.values())
        )


def clock(device=None):
    """``time.perf_counter()`` once the work queued on ``device`` (if CUDA) is done."""
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def time_batches(model, loader, warmup=0, device=None, keep=None):
    """
    Run ``model`` on every batch of ``loader`` without gradients; the batches holding the first
    ``warmup`` images are not timed, and ``model.timer`` is reset when timing starts. The device
    is synchronised before every clock read.

    Args:
        keep (callable or None): ``keep(inputs, outputs)`` of a timed batch, within its timed
            call (e.g. moving the predictions to the CPU); its results are returned in order.
    Returns:
        dict: "images" (timed), "load_s" (waiting for the loader), "model_s" (model calls and
        ``keep``), "wall_s" (from the end of the warmup to the end), "kept" (list).
    """
    out = {"images": 0, "load_s": 0.0, "model_s": 0.0, "wall_s": 0.0, "kept": []}
    seen, start = 0, None
    if warmup <= 0:
        model.timer.reset()
        start = clock(device)
    batches = iter(loader)
    with torch.no_grad():
        while True:
            t0 = clock(device)
            try:
                inputs = next(batches)
            except StopIteration:
                break
            t1 = clock(device)
            outputs = model(inputs)
            if start is not None:
                if keep is not None:
                    out["kept"].append(keep(inputs, outputs))
                out["load_s"] += t1 - t0
                out["model_s"] += clock(device) - t1
                out["images"] += len(inputs)
            seen += len(inputs)
            if start is None and seen >= warmup:
                model.timer.reset()
                start = clock(device)
    if start is not None:
        out["wall_s"] = clock(device) - start
    return out
