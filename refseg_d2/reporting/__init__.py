"""
Results people look at: the HTML report of an evaluation run (``OUTPUT_DIR/report.html``) and
the figure of a seed sweep (``results.png`` / ``results.svg``) with the published baselines.
Imports only from the layers below it (utils, modeling); the engine and the tools call it.
"""
from .recall import best_and_worst, ground_truth_records, image_recall
from .references import memory_crop_sheet
from .run_report import REPORT_NAME, try_write_run_report, write_run_report
from .sweep_plot import benchmark_for, build_sweep_figure, load_baselines, write_sweep_figures
from .sweep_rows import (
    flatten_metrics, rows_from_csv, rows_from_run_dirs, summary_rows, table_from_run_dirs,
)
from .sweep_tables import collect_runs, select_metrics, write_tables

__all__ = [
    "REPORT_NAME", "benchmark_for", "best_and_worst", "build_sweep_figure", "collect_runs",
    "flatten_metrics", "ground_truth_records", "image_recall", "load_baselines",
    "memory_crop_sheet", "rows_from_csv", "rows_from_run_dirs", "select_metrics", "summary_rows",
    "table_from_run_dirs", "try_write_run_report", "write_run_report", "write_sweep_figures",
    "write_tables",
]
