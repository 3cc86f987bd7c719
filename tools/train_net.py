#!/usr/bin/env python
"""
refseg_d2 evaluation script, Detectron2's train_net.py for a training-free model.

With --eval-only: build the model, load MODEL.WEIGHTS (a saved memory) if given, fill the
memory from DATASETS.REFERENCE when nothing was loaded (and save it), then evaluate on
DATASETS.TEST. Without --eval-only the "training" is the memory filling: the memory is always
rebuilt from the references, saved, then evaluated.

    python tools/train_net.py --config-file configs/coco/refseg_sam2l_dinov2l.yaml --eval-only \
        --register my_refs refs.json ref_images/ --register my_test test.json test_images/ \
        DATASETS.REFERENCE '("my_refs",)' DATASETS.TEST '("my_test",)'
"""
import json
import logging
import os

from detectron2.config import get_cfg
from detectron2.data.datasets import register_coco_instances
from detectron2.engine import default_argument_parser, default_setup, launch
from detectron2.evaluation import verify_results
from detectron2.utils import comm
from detectron2.utils.file_io import PathManager
from detectron2.utils.logger import setup_logger

from refseg_d2 import RefSegCheckpointer, RefSegTrainer, add_refseg_config, ensure_memory


def register_datasets(entries):
    """Register (name, json_file, image_root) triples as COCO-format instance datasets."""
    from detectron2.data import DatasetCatalog

    for name, json_file, image_root in entries or []:
        if name not in DatasetCatalog.list():
            register_coco_instances(name, {}, json_file, image_root)


def setup(args):
    cfg = get_cfg()
    add_refseg_config(cfg)
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    cfg.freeze()
    default_setup(cfg, args)
    setup_logger(output=cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="refseg_d2")
    return cfg


def main(args):
    register_datasets(args.register)
    cfg = setup(args)
    model = RefSegTrainer.build_model(cfg)
    RefSegCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(
        cfg.MODEL.WEIGHTS, resume=args.resume
    )
    if not args.eval_only:
        logging.getLogger("refseg_d2").info("Training-free model: 'training' = filling the memory")
        ensure_memory(cfg, model, force=True)
    res = RefSegTrainer.test(cfg, model)
    if comm.is_main_process():
        write_metrics(cfg, res)
        verify_results(cfg, res)
    return res


def write_metrics(cfg, results):
    """Write the evaluation results to OUTPUT_DIR/metrics.json (for scripts and sweeps)."""
    path = os.path.join(cfg.OUTPUT_DIR, "metrics.json")
    with PathManager.open(path, "w") as f:
        json.dump(results, f, indent=2)
    logging.getLogger("refseg_d2").info("Metrics written to %s", path)


def get_parser():
    parser = default_argument_parser()
    parser.add_argument(
        "--register",
        nargs=3,
        action="append",
        metavar=("NAME", "JSON", "IMAGE_ROOT"),
        help="register a COCO-format dataset before the run (repeatable)",
    )
    return parser


def invoke_main() -> None:
    args = get_parser().parse_args()
    print("Command Line Args:", args)
    launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )


if __name__ == "__main__":
    invoke_main()  # pragma: no cover
