#!/usr/bin/env python
"""
Add SAM 2 masks to the box-only annotations of a COCO-format file (PASCAL VOC, CD-FSOD), as the
authors' protocol does with SAM (``sam_bbox_to_segm_batch.py``), for references and for segm-AP
ground truth. SAM 2 is loaded and prompted exactly as the memory filling does for box-only
references (``MODEL.REFSEG.SAM2.*`` of the config): the image squashed to the SAM 2 input, one
single-mask box prompt per annotation (all boxes of an image decoded in batches of
``--box-batch``), logits upsampled to the annotation's image size and thresholded at 0.

    python tools/add_sam2_masks.py --config-file configs/refseg_sam2l_dinov2l.yaml \
        --input datasets/ArTaxOr/annotations/test.json --image-root datasets/ArTaxOr/test
    python tools/add_sam2_masks.py --config-file configs/refseg_sam2l_dinov2l.yaml \
        --dataset voc_2007_test_all     # -> datasets/VOC2007/voc07_test_with_segm.json

The output (default ``<input>_with_segm.json``, where the ``_with_segm`` datasets of
``refseg_d2.data.datasets`` look for it) is the input with, for every annotation without
a segmentation (every annotation with ``--overwrite``), a mask and ``area`` = the pixel count
of SAM 2's mask. ``--mask-format polygon`` (default) stores it as the authors do: polygons of
the external contours only (``cv2.RETR_EXTERNAL``, ``CHAIN_APPROX_SIMPLE``; holes are lost),
contours of two points or fewer dropped, and the box polygon when nothing remains.
``--mask-format rle`` stores the mask itself (holes kept; an empty mask becomes the box
rectangle). Every image of the input is kept (the authors' script drops the images without
annotations; the CD-FSOD test datasets of refseg_d2 leave those out themselves, see docs/BENCHMARKS.md).
Progress is appended to ``<output>.partial`` after every image: an interrupted run (or one
stopped by ``--max-images``) resumes where it stopped.
The output is written atomically once every image is done.
"""
import json
import logging
import os

from detectron2.data import MetadataCatalog
from detectron2.utils.logger import setup_logger

from refseg_d2.data.box_masks import MASK_FORMATS, add_sam2_masks
from refseg_d2.data.datasets.common import file_signature, load_json
from refseg_d2.data.ground_truth import prepare_ground_truth
from refseg_d2.engine.defaults import refseg_tool_parser, tool_setup
from refseg_d2.modeling.proposals import SAM2Prompter, build_sam2_model
from refseg_d2.utils.files import atomic_write

logger = logging.getLogger("refseg_d2.add_sam2_masks")

def parse_args(argv=None):
    p = refseg_tool_parser(__doc__)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--input", help="COCO-format JSON file")
    src.add_argument("--dataset", help="a registered dataset: its json_file and image_root")
    p.add_argument("--image-root", help="folder of the file names of --input")
    p.add_argument("--output", help="default: <input>_with_segm.json")
    p.add_argument("--overwrite", action="store_true", help="replace existing segmentations too")
    p.add_argument("--mask-format", choices=MASK_FORMATS, default="polygon",
                   help="polygon: the authors' external contours (default); rle: exact masks")
    p.add_argument("--box-batch", type=int, default=64, help="box prompts decoded together")
    p.add_argument("--max-images", type=int, default=0, help="stop after N images (resume later)")
    return p.parse_args(argv)


def resolve_source(args):
    """
    (json_file, image_root, output) from --input/--image-root or --dataset. The default output
    is the dataset's ``with_segm_json`` metadata, else ``<json>_with_segm.json``.
    """
    output = args.output
    if args.dataset:
        import refseg_d2.data.datasets  # noqa: F401  registers the benchmark datasets

        json_file = prepare_ground_truth(args.dataset)
        meta = MetadataCatalog.get(args.dataset)
        image_root = meta.get("image_root", None)
        output = output or meta.get("with_segm_json", None)
        if json_file is None or image_root is None:
            raise ValueError(
                "Dataset {!r} has no json_file/image_root metadata".format(args.dataset)
            )
    else:
        if not args.image_root:
            raise ValueError("--input needs --image-root")
        json_file, image_root = args.input, args.image_root
    output = output or os.path.splitext(json_file)[0] + "_with_segm.json"
    return json_file, image_root, output


def build_prompter(cfg):
    """SAM 2 as ``MODEL.REFSEG.SAM2.*`` selects it, on MODEL.DEVICE."""
    r = cfg.MODEL.REFSEG
    sam = build_sam2_model(r.SAM2.CONFIG, r.SAM2.WEIGHTS, r.SAM2.INPUT_SIZE, r.RANDOM_INIT)
    prompter = SAM2Prompter(sam, r.POINTS_PER_SIDE, r.POINTS_PER_BATCH, r.PRED_IOU_THRESH)
    return prompter.to(cfg.MODEL.DEVICE).eval()


def main(argv=None):
    args = parse_args(argv)
    setup_logger(name="refseg_d2")
    cfg = tool_setup(args)
    json_file, image_root, output = resolve_source(args)
    data = load_json(json_file, "--input")
    r = cfg.MODEL.REFSEG
    header = {
        "input": file_signature(json_file),
        "sam2": {"config": r.SAM2.CONFIG, "input_size": r.SAM2.INPUT_SIZE,
                 "weights": file_signature(r.SAM2.WEIGHTS) if r.SAM2.WEIGHTS else "random"},
        "overwrite": args.overwrite,
        "mask_format": args.mask_format,
    }
    progress_path = output + ".partial"
    stats = add_sam2_masks(
        data, image_root, build_prompter(cfg), progress_path, header, args.overwrite,
        args.box_batch, 64, args.max_images, args.mask_format,
    )
    if stats["remaining"]:
        logger.info("Stopped with %d images left; run again to resume (%s)", stats["remaining"],
                    progress_path)
        return stats
    if isinstance(data.get("info", {}), dict):
        info = data.setdefault("info", {})
        info["refseg_sam2_masks"] = dict(header["sam2"], masks=stats["masks"],
                                         mask_format=args.mask_format)
    atomic_write(output, lambda f: json.dump(data, f), mode="w", what="the annotations")
    os.remove(progress_path)
    logger.info("%d masks from SAM 2 (%d empty, replaced by their box) written to %s",
                stats["masks"], stats["box_fallbacks"], output)
    return stats


if __name__ == "__main__":
    main()  # pragma: no cover
