#!/usr/bin/env python
r"""
refseg_d2 on your own images: build a memory from references (or load a saved one), segment
image files, folders or globs, and write a visualisation per image and one COCO-format results
file for the run.

    python tools/demo.py --config-file configs/refseg_sam2l_dinov2l.yaml \
        --ref-folder my_refs/ --input photos/ "more/*.jpg" --output output/my_demo \
        -- MODEL.DEVICE cpu
    python tools/demo.py --config-file configs/refseg_sam2l_dinov2l.yaml \
        --memory output/my_demo/refseg_memory.pth --input new_photos/ --output output/more

References: --ref-coco JSON IMAGE_ROOT (COCO format; annotations without segmentation are
box-only), --ref-boxes JSON (box-only records) or --ref-folder DIR (<DIR>/<class>/<image> with
<image stem>_mask.png); formats in refseg_d2/data/reference_sources.py. A memory built from
references is saved to OUTPUT/refseg_memory.pth; --memory reuses one without any reference image.

Outputs in --output: vis/<image>.png (predictions with a score >= --score-thresh),
coco_instances_results.json (every detection, COCO results format), image_info.json (the
images and categories those results refer to), summary.json. With a box-proposal config
(configs/fsod_vfm/), --boxes JSON gives the proposal boxes: a COCO results file whose image_id
is the image's position among the inputs (1..N, as in image_info.json). Config overrides KEY VALUE come
last, after ``--`` when they follow ``--input`` (as in every refseg_d2 tool).
"""
import glob
import json
import logging
import os
import time
from collections import Counter

from detectron2.evaluation.coco_evaluation import instances_to_coco_json
from detectron2.utils.logger import setup_logger
from PIL import Image
from tqdm import tqdm

from refseg_d2.engine.defaults import (
    add_reference_arguments, refseg_tool_parser, register_from_args, tool_setup,
)
from refseg_d2.modeling.proposals.sources import load_boxes_file
from refseg_d2.predictor import RefSegPredictor
from refseg_d2.utils.images import is_image_file, read_rgb
from refseg_d2.utils.visualization import draw_predictions, output_path

logger = logging.getLogger("refseg_d2.demo")

RESULTS_FILE = "coco_instances_results.json"
IMAGE_INFO_FILE = "image_info.json"
MEMORY_NAME = "refseg_memory"


def get_parser():
    p = refseg_tool_parser(__doc__)
    add_reference_arguments(p)
    p.add_argument("--memory", metavar="PTH", help="a saved memory (no reference image is read)")
    p.add_argument("--input", nargs="+", required=True,
                   help="image files, folders (their images) or glob patterns (quote them)")
    p.add_argument("--output", default="output/demo", help="output folder")
    p.add_argument("--score-thresh", type=float, default=0.5,
                   help="minimum score of the visualised (and counted) detections")
    p.add_argument("--boxes", metavar="JSON",
                   help="proposal boxes (COCO results; image_id = position among the inputs)")
    return p


def collect_inputs(specs):
    """Image files named by files, folders (non-recursive) or glob patterns, in order, unique."""
    files = []
    for spec in specs:
        if os.path.isdir(spec):
            found = sorted(os.path.join(spec, f) for f in os.listdir(spec) if is_image_file(f))
        elif os.path.isfile(spec):
            found = [spec]
        else:
            found = sorted(f for f in glob.glob(spec, recursive=True)
                           if os.path.isfile(f) and is_image_file(f))
        if not found:
            raise FileNotFoundError("--input {!r} names no image file (nor a folder or glob with "
                                    "images)".format(spec))
        files.extend(found)
    return list(dict.fromkeys(files))


def build_predictor(cfg, args):
    """The predictor with its memory: loaded from --memory, or built from the references."""
    has_refs = bool(args.ref_coco or args.ref_boxes or args.ref_folder)
    if bool(args.memory) == has_refs:
        raise ValueError("Give either --memory or one reference source (--ref-coco, --ref-boxes, "
                         "--ref-folder)")
    if args.memory:
        if not os.path.isfile(args.memory):
            raise FileNotFoundError("Memory file not found: {}".format(args.memory))
        predictor = RefSegPredictor(cfg)
        predictor.load_memory(args.memory)
        logger.info("Memory loaded from %s: %s", args.memory, predictor.memory.extra_repr())
        return predictor
    name = register_from_args(args, "refseg_demo_references")
    predictor = RefSegPredictor(cfg)
    stats = predictor.add_reference_dataset(name)
    path = predictor.save_memory(os.path.join(args.output, MEMORY_NAME + ".pth"))
    logger.info("Memory of %d references (%d masks from SAM 2) saved to %s",
                stats["references"], stats["sam2_masks"], path)
    return predictor


def input_boxes(path, files):
    """{image position: (boxes, scores)} of a --boxes file; every input must have an entry."""
    if not path:
        return None
    boxes = load_boxes_file(path)
    missing = [f for i, f in enumerate(files, start=1) if i not in boxes]
    if missing:
        raise ValueError("--boxes {} has no box for image_id {} ({})".format(
            path, files.index(missing[0]) + 1, missing[0]))
    return boxes


def segment(predictor, files, out_dir, score_thresh, apply_exif=False, boxes=None):
    """
    Segment ``files`` (with their proposal ``boxes`` from :func:`input_boxes`, if given); write
    one visualisation per image.

    Returns:
        results (list[dict]): COCO results (dataset category ids, image ids 1..N in order),
        images (list[dict]): id, file_name, width, height, seconds, detections.
    """
    vis_dir = os.path.join(out_dir, "vis")
    os.makedirs(vis_dir, exist_ok=True)
    class_ids = predictor.memory.class_ids.tolist()
    metadata = predictor.metadata
    results, images, used = [], [], set()
    bar = tqdm(files, desc="demo", unit="img")
    for image_id, file_name in enumerate(bar, start=1):
        image = read_rgb(file_name, apply_exif)
        start = time.perf_counter()
        given = boxes[image_id] if boxes is not None else (None, None)
        instances = predictor(image, *given)["instances"].to("cpu")
        seconds = time.perf_counter() - start
        dets = instances_to_coco_json(instances, image_id)
        for det in dets:
            det["category_id"] = class_ids[det["category_id"]]
        results.extend(dets)
        vis_path = output_path(vis_dir, file_name, used)
        Image.fromarray(draw_predictions(image, instances, metadata, score_thresh)).save(vis_path)
        kept = int((instances.scores >= score_thresh).sum())
        images.append({"id": image_id, "file_name": file_name, "width": image.width,
                       "height": image.height, "seconds": seconds, "detections": len(instances),
                       "above_thresh": kept, "visualisation": vis_path})
        bar.set_postfix(s_per_img="{:.2f}".format(seconds), dets=kept)
        logger.info("%s: %d detections, %d with score >= %.2f, %.2fs", file_name, len(instances),
                    kept, score_thresh, seconds)
    return results, images


def summarize(predictor, images, results, score_thresh):
    """Totals of the run: images, detections, detections above the threshold per class, time."""
    names = dict(zip(predictor.memory.class_ids.tolist(), predictor.class_names))
    per_class = Counter(names[r["category_id"]] for r in results if r["score"] >= score_thresh)
    seconds = [im["seconds"] for im in images]
    return {
        "images": len(images),
        "detections": len(results),
        "score_thresh": score_thresh,
        "above_thresh": sum(im["above_thresh"] for im in images),
        "above_thresh_per_class": {n: per_class.get(n, 0) for n in predictor.class_names},
        "seconds_total": sum(seconds),
        "seconds_per_image": sum(seconds) / max(len(seconds), 1),
    }


def write_json(path, data):
    with open(path, "w") as f:
        json.dump(data, f)
    return path


def main(argv=None):
    args = get_parser().parse_args(argv)
    os.makedirs(args.output, exist_ok=True)
    setup_logger(output=args.output, name="refseg_d2")
    cfg = tool_setup(args, output_dir=args.output)
    cfg.freeze()
    files = collect_inputs(args.input)
    logger.info("%d input images", len(files))
    boxes = input_boxes(args.boxes, files)
    predictor = build_predictor(cfg, args)
    results, images = segment(predictor, files, args.output, args.score_thresh,
                              cfg.MODEL.REFSEG.INPUT.APPLY_EXIF, boxes)
    write_json(os.path.join(args.output, RESULTS_FILE), results)
    categories = [{"id": i, "name": n}
                  for i, n in zip(predictor.memory.class_ids.tolist(), predictor.class_names)]
    info = [{k: im[k] for k in ("id", "file_name", "width", "height")} for im in images]
    write_json(os.path.join(args.output, IMAGE_INFO_FILE),
               {"images": info, "categories": categories})
    summary = summarize(predictor, images, results, args.score_thresh)
    summary["images_detail"] = images
    write_json(os.path.join(args.output, "summary.json"), summary)
    lines = ["{} images, {} detections ({} with score >= {:.2f}), {:.2f}s per image".format(
        summary["images"], summary["detections"], summary["above_thresh"], args.score_thresh,
        summary["seconds_per_image"])]
    lines += ["  {}: {}".format(n, k) for n, k in summary["above_thresh_per_class"].items()]
    lines.append("Visualisations: {}".format(os.path.join(args.output, "vis")))
    lines.append("Results (COCO format): {}".format(os.path.join(args.output, RESULTS_FILE)))
    print("\n".join(lines))
    return summary


if __name__ == "__main__":
    main()
