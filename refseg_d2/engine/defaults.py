"""
What every refseg_d2 tool shares, built on Detectron2's ``default_argument_parser`` and
``default_setup``: ``--config-file``, ``--register NAME JSON IMAGE_ROOT`` (repeatable) and config
overrides as positional ``KEY VALUE`` pairs at the end of the command line (after ``--`` when
the option before them takes a list, e.g. ``--input a.jpg b.jpg -- MODEL.DEVICE cpu``).

Tools that launch processes (train_net, sweep) take :func:`refseg_argument_parser` (all of
Detectron2's launch options) and :func:`setup`; the others :func:`refseg_tool_parser` (the same
three, no launch options) and :func:`tool_setup`. Tools that read references from user files
add :func:`add_reference_arguments` and register them with :func:`register_from_args`; tools
that evaluate write :func:`write_metrics`.
"""
import argparse
import json
import logging
import os

from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog
from detectron2.engine import default_argument_parser, default_setup
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from ..config import add_refseg_config
from ..data.reference_sources import register_coco_file, register_reference_source
from ..utils.files import atomic_write

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"


def refseg_argument_parser(description=None, epilog=None):
    """Detectron2's ``default_argument_parser`` with ``--register`` added."""
    parser = default_argument_parser(epilog=epilog)
    if description:
        parser.description = description
    add_register_argument(parser)
    return parser


def refseg_tool_parser(description=None, config_required=True):
    """An argparse parser with ``--config-file``, ``--register`` and the positional overrides."""
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config-file", required=config_required, metavar="FILE",
                        help="path to config file")
    add_register_argument(parser)
    parser.add_argument(
        "opts",
        nargs=argparse.REMAINDER,
        help="config overrides KEY VALUE ... at the end of the command (after -- when the "
        "option before them takes a list)",
    )
    return parser


def add_register_argument(parser):
    """``--register NAME JSON IMAGE_ROOT``, repeatable: COCO-format datasets to register."""
    parser.add_argument(
        "--register",
        nargs=3,
        action="append",
        default=[],
        metavar=("NAME", "JSON", "IMAGE_ROOT"),
        help="register a COCO-format dataset before the run (repeatable)",
    )
    return parser


def add_reference_arguments(parser, required=False):
    """Add the mutually exclusive --ref-coco / --ref-boxes / --ref-folder options to ``parser``."""
    group = parser.add_mutually_exclusive_group(required=required)
    group.add_argument("--ref-coco", nargs=2, metavar=("JSON", "IMAGE_ROOT"),
                       help="references: a COCO-format file and its image folder")
    group.add_argument("--ref-boxes", metavar="JSON", help="references: a box-only JSON file")
    group.add_argument("--ref-folder", metavar="DIR",
                       help="references: <DIR>/<class>/<image> and <image stem>_mask.png")
    return group


def register_from_args(args, name):
    """Register the source named by :func:`add_reference_arguments` options; None if none given."""
    if args.ref_coco:
        return register_reference_source(name, "coco", args.ref_coco[0], args.ref_coco[1])
    if args.ref_boxes:
        return register_reference_source(name, "boxes", args.ref_boxes)
    if args.ref_folder:
        return register_reference_source(name, "folder", args.ref_folder)
    return None


def register_datasets(entries):
    """
    Register (name, json_file, image_root) triples as COCO-format instance datasets (a name
    already registered is left as it is).
    """
    for name, json_file, image_root in entries or []:
        if name not in DatasetCatalog.list():
            register_coco_file(name, json_file, image_root)


def config_overrides(opts):
    """The positional KEY VALUE overrides (a leading ``--`` separator dropped)."""
    opts = list(opts or [])
    return opts[1:] if opts[:1] == ["--"] else opts


def build_cfg(config_file, opts=(), output_dir=None):
    """A refseg config: defaults, ``config_file``, the overrides, then ``output_dir`` if given."""
    cfg = get_cfg()
    add_refseg_config(cfg)
    cfg.merge_from_file(config_file)
    cfg.merge_from_list(config_overrides(opts))
    if output_dir:
        cfg.OUTPUT_DIR = output_dir
    return cfg


def tool_setup(args, output_dir=None):
    """
    The config of a tool run that launches no process (``args`` from
    :func:`refseg_tool_parser`): its ``--register`` datasets registered, then the config file,
    the positional overrides and ``output_dir`` if given. Not frozen: a tool may still fill in
    what its own options decide.
    """
    register_datasets(getattr(args, "register", None))
    return build_cfg(args.config_file, args.opts, output_dir=output_dir)


def write_metrics(output_dir, results):
    """
    Write evaluation results to ``output_dir/metrics.json``, atomically: a sweep takes a run
    with a metrics.json as finished. Returns the path.
    """
    path = os.path.join(output_dir, METRICS_FILE)
    atomic_write(path, lambda f: json.dump(results, f, indent=2), mode="w", what="the metrics")
    return path


def setup(args, output_dir=None):
    """
    The frozen config of a tool run (``args`` from :func:`refseg_argument_parser`): its
    ``--register`` datasets registered, Detectron2's ``default_setup`` (logging, config dump in
    OUTPUT_DIR, seeds) and the refseg_d2 logger writing to OUTPUT_DIR.
    """
    cfg = tool_setup(args, output_dir)
    cfg.freeze()
    default_setup(cfg, args)
    setup_logger(output=cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="refseg_d2")
    return cfg
