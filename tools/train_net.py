#!/usr/bin/env python
"""
refseg_d2 evaluation script, Detectron2's train_net.py for a training-free model.

With --eval-only: build the model, load MODEL.WEIGHTS (a saved memory) if given, fill the
memory from DATASETS.REFERENCE when nothing was loaded (and save it), then evaluate on
DATASETS.TEST. Without --eval-only the "training" is the memory filling: the memory is always
rebuilt from the references, saved, then evaluated. Writes OUTPUT_DIR/metrics.json, then
OUTPUT_DIR/report.html (metrics, per-class AP, time per stage, the references, a gallery of the
best and worst images; --no-report skips it).

    python tools/train_net.py --config-file configs/refseg_sam2l_dinov2l.yaml --eval-only \\
        --register my_refs refs.json ref_images/ --register my_test test.json test_images/ \\
        DATASETS.REFERENCE '("my_refs",)' DATASETS.TEST '("my_test",)'
"""
import logging

from detectron2.engine import launch
from detectron2.evaluation import verify_results
from detectron2.utils import comm

from refseg_d2 import RefSegCheckpointer, RefSegTrainer, ensure_memory
from refseg_d2.engine import refseg_argument_parser, setup
from refseg_d2.engine.defaults import write_metrics
from refseg_d2.reporting import try_write_run_report

logger = logging.getLogger("refseg_d2")


def main(args):
    cfg = setup(args)
    model = RefSegTrainer.build_model(cfg)
    RefSegCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(
        cfg.MODEL.WEIGHTS, resume=args.resume
    )
    if not args.eval_only:
        logger.info("Training-free model: 'training' = filling the memory")
        ensure_memory(cfg, model, force=True)
    res = RefSegTrainer.test(cfg, model)
    if comm.is_main_process():
        logger.info("Metrics written to %s", write_metrics(cfg.OUTPUT_DIR, res))
        if not getattr(args, "no_report", False):
            try_write_run_report(cfg, model, res)   # warns, never fails the run
        verify_results(cfg, res)
    return res


def get_parser():
    parser = refseg_argument_parser(description=__doc__)
    parser.add_argument("--no-report", action="store_true",
                        help="do not write OUTPUT_DIR/report.html")
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
