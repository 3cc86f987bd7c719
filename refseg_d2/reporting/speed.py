"""The text summary of a speed benchmark report (``tools/benchmark.py``'s JSON)."""
from tabulate import tabulate


def format_benchmark(report):
    """
    Per-stage seconds per image, images/s, peak memory per phase, each target size and the
    sweep's cost against one run (when measured), as printed lines.
    """
    inference, peaks = report["inference"], report["peak_memory"]
    rows = [[k, "{:.4f}".format(v)] for k, v in inference["per_image_s"].items()]
    rows.append(["total (per image)", "{:.4f}".format(sum(inference["per_image_s"].values()))])
    lines = [tabulate(rows, headers=["stage", "seconds / image"], tablefmt="pipe"),
             "images/s: {:.3f}  ({} images)".format(inference["images_per_s"],
                                                    inference["images"]),
             tabulate([[phase] + ["{:.0f}".format(v) for v in p.values()]
                       for phase, p in peaks.items()],
                      headers=["peak memory (MiB)"] + list(peaks["inference"]), tablefmt="pipe")]
    for key, r in report.get("target_sizes", {}).items():
        lines.append("target {}: {:.3f} s/image, peak {}".format(
            key, sum(r["per_image_s"].values()),
            ", ".join("{} {:.0f}".format(k, v) for k, v in r["peak_memory"].items())))
    if "sweep" in report:
        s = report["sweep"]
        lines.append("one-pass sweep of {} runs on {} images: {:.1f}s = {:.2f} x one run "
                     "({:.1f}s); from its own phases: {:.2f} x one run".format(
                         s["runs"], s["images"], s["sweep_s"], s["sweep_over_single_run"],
                         s["single_run_s"], s["sweep_phases"]["sweep_over_one_run"]))
    return "\n".join(lines)
