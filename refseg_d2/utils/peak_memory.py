"""Peak host and CUDA memory of one phase of a run (model build, memory filling, inference)."""
import os
import resource
import threading

import torch


def rss_mib():
    """The resident set size of this process now, in MiB (``/proc/self/statm``)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class PeakMemory:
    """
    Peak memory of one phase (a context manager); ``result`` after exit: cpu_rss_peak_mib
    (sampled every ``period`` seconds by a thread, so a shorter spike can be missed),
    cpu_rss_start_mib, process_max_rss_mib (``getrusage``, which can only grow) and, on CUDA,
    gpu_allocated_peak_mib and gpu_reserved_peak_mib (the allocator's peaks, reset at entry).
    """

    def __init__(self, device, period=0.005):
        self.cuda = torch.device(device).type == "cuda"
        self.period = period
        self.result = {}

    def _sample(self):
        while not self._stop.wait(self.period):
            self._peak = max(self._peak, rss_mib())

    def __enter__(self):
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        self._start = self._peak = rss_mib()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        if self.cuda:
            torch.cuda.synchronize()
        self._stop.set()
        self._thread.join()
        self.result = {
            "cpu_rss_peak_mib": max(self._peak, rss_mib()),
            "cpu_rss_start_mib": self._start,
            "process_max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        }
        if self.cuda:
            self.result["gpu_allocated_peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
            self.result["gpu_reserved_peak_mib"] = torch.cuda.max_memory_reserved() / 2**20
        return False
