#!/usr/bin/env python
r"""
Reference-quality report of a saved memory: classes and shots, the cosine similarity between
class prototypes, each reference's leave-one-out similarity to the rest of its class (outliers
flagged), and a PNG sheet of the reference crops with their masks.

    python tools/inspect_memory.py output/my_run/refseg_memory.pth --output output/my_run/report

Similarities come from the instance means the memory holds; no model is built. The crop sheet
needs to know where each shot came from: memories saved by tools/train_net.py, tools/demo.py
or RefSegPredictor record it; for others name the reference source they were built from
(--ref-coco / --ref-boxes / --ref-folder, with --context-ratio if it was not 0.2).

Outputs in --output: report.json, report.txt (also printed) and reference_crops.png.
"""
import argparse
import json
import logging
import os

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.utils.logger import setup_logger

from refseg_d2.data.reference_sources import reference_provenance
from refseg_d2.engine.defaults import add_reference_arguments, register_from_args
from refseg_d2.modeling.memory import load_memory
from refseg_d2.modeling.memory.report import build_report, format_report
from refseg_d2.reporting import memory_crop_sheet
from refseg_d2.utils.catalog import unregister

logger = logging.getLogger("refseg_d2.inspect_memory")


def get_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("memory", help="a saved memory (.pth)")
    p.add_argument("--output", default=None, help="output folder (default: <memory>_report)")
    add_reference_arguments(p)
    p.add_argument("--context-ratio", type=float, default=0.2,
                   help="MODEL.REFSEG.MEMORY.CONTEXT_RATIO the memory was built with (crop sheet "
                        "from a reference source only)")
    p.add_argument("--apply-exif", action="store_true",
                   help="MODEL.REFSEG.INPUT.APPLY_EXIF was on when the memory was built")
    p.add_argument("--z-thresh", type=float, default=3.0,
                   help="flag references this many robust std below their class median")
    p.add_argument("--max-shots", type=int, default=10, help="crops per class on the sheet")
    p.add_argument("--tile", type=int, default=96, help="crop tile size in pixels")
    return p


def provenance_from_source(args, memory):
    """Per-class provenance rebuilt from a reference source; None for classes it cannot match."""
    name = register_from_args(args, "refseg_inspect_references")
    try:
        dicts = DatasetCatalog.get(name)
        names = list(MetadataCatalog.get(name).thing_classes)
    finally:
        unregister(name)
    if names != list(memory.class_names):
        raise ValueError("The reference source has classes {} but the memory {}".format(
            names, list(memory.class_names)))
    records = reference_provenance(dicts, len(names), args.context_ratio, args.apply_exif)
    result = []
    for c, per_class in enumerate(records):
        if len(per_class) != int(memory.counts[c]):
            logger.warning("Class %r: the source has %d references, the memory %d; its crops are "
                           "not shown", names[c], len(per_class), int(memory.counts[c]))
            per_class = None
        result.append(per_class)
    return result


def main(argv=None):
    args = get_parser().parse_args(argv)
    out = args.output or os.path.splitext(args.memory)[0] + "_report"
    os.makedirs(out, exist_ok=True)
    setup_logger(output=out, name="refseg_d2")
    memory = load_memory(args.memory)
    provenance = memory.provenance
    if args.ref_coco or args.ref_boxes or args.ref_folder:
        provenance = provenance_from_source(args, memory)
    elif not any(provenance):
        logger.warning("%s records no reference sources: the crop sheet is empty. Name the "
                       "references it was built from (--ref-coco / --ref-boxes / --ref-folder).",
                       args.memory)
    report = build_report(memory, provenance, args.z_thresh)
    with open(os.path.join(out, "report.json"), "w") as f:
        json.dump(report, f, indent=1)
    text = format_report(report)
    with open(os.path.join(out, "report.txt"), "w") as f:
        f.write(text + "\n")
    sheet, _ = memory_crop_sheet(memory, provenance, report, tile=args.tile,
                                 max_shots=args.max_shots)
    sheet_path = os.path.join(out, "reference_crops.png")
    sheet.save(sheet_path)
    print(text)
    print("\nReport: {}\nReference crops: {}".format(os.path.join(out, "report.json"), sheet_path))
    return report


if __name__ == "__main__":
    main()
