"""
The reference set of a memory as people look at it: shots per class and the sheet of reference
crops with their masks, captioned with each reference's leave-one-out similarity and outliers
framed in red (``tools/inspect_memory.py`` and the run report draw the same sheet).
"""
from ..modeling.memory.report import build_report
from ..utils.visualization import reference_crop_sheet


def sheet_annotations(report):
    """
    Per class, per shot: the caption (leave-one-out similarity, "-" when undefined) and
    whether it is flagged, from :func:`refseg_d2.modeling.memory.report.build_report`.

    Returns:
        (captions, flagged): lists (C) of lists (K_c).
    """
    captions = [["{:.2f}".format(s["loo"]) if s["loo"] is not None else "-" for s in r["shots"]]
                for r in report["references"]]
    flagged = [[bool(s["flags"]) for s in r["shots"]] for r in report["references"]]
    return captions, flagged


def memory_crop_sheet(memory, provenance=None, report=None, z_thresh=3.0, tile=96, max_shots=10):
    """
    The crop sheet of a memory.

    Args:
        memory (MemoryBank).
        provenance (list or None): per class, its shots' sources (default: the memory's).
        report (dict or None): its reference-quality report (computed when None).
    Returns:
        (PIL image, report)
    """
    provenance = provenance if provenance is not None else memory.provenance
    if report is None:
        report = build_report(memory, provenance, z_thresh)
    captions, flagged = sheet_annotations(report)
    sheet = reference_crop_sheet(list(memory.class_names), provenance, captions, flagged,
                                 tile=tile, max_shots=max_shots)
    return sheet, report


def shots_per_class(memory):
    """[(category id, class name, shots)] of a memory."""
    return list(zip(memory.class_ids.tolist(), list(memory.class_names), memory.counts.tolist()))
