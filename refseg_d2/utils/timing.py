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
