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
annotations; the CD-FSOD test datasets of refseg_d2 leave those out themselves, see the README).
Progress is appended to ``<output>.partial`` after every image: an interrupted run (or one
stopped by ``--max-images``) resumes where it stopped.
The output is written atomically once every image is done.
"""
import json
import logging
import os

import cv2
import numpy as np
import pycocotools.mask as mask_util
import torch
from detectron2.data import MetadataCatalog
from detectron2.utils.logger import setup_logger
from PIL import Image
from tqdm import tqdm

from refseg_d2.data.datasets.common import file_signature, load_json
from refseg_d2.data.ground_truth import prepare_ground_truth
from refseg_d2.data.mappers import pil_to_tensor, squash_resize
from refseg_d2.engine.defaults import refseg_tool_parser, tool_setup
from refseg_d2.modeling.memory.encoding import masks_from_boxes
from refseg_d2.modeling.proposals import SAM2Prompter, build_sam2_model
from refseg_d2.utils.files import atomic_write
from refseg_d2.utils.geometry import xywh_to_xyxy
from refseg_d2.utils.images import read_rgb

logger = logging.getLogger("refseg_d2.add_sam2_masks")

MASK_FORMATS = ("polygon", "rle")


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
    sam = build_sam2_model(r.SAM2.CONFIG, r.SAM2.WEIGHTS, r.SAM2.INPUT_SIZE, r.RANDOM_INIT,
                           r.RANDOM_INIT_SEED)
    prompter = SAM2Prompter(sam, r.POINTS_PER_SIDE, r.POINTS_PER_BATCH, r.PRED_IOU_THRESH)
    return prompter.to(cfg.MODEL.DEVICE).eval()


def needs_mask(ann, overwrite):
    return overwrite or not ann.get("segmentation")


def image_masks(prompter, image, boxes_xywh, box_batch, upsample_chunk):
    """
    Args:
        image: RGB PIL image at the annotations' size (W, H).
        boxes_xywh: list of COCO boxes.
    Returns:
        (R, H, W) bool masks.
    """
    sam_image = pil_to_tensor(squash_resize(image, prompter.input_size))
    boxes = torch.tensor([xywh_to_xyxy(b) for b in boxes_xywh], dtype=torch.float32)
    with torch.no_grad():
        masks = masks_from_boxes(prompter, sam_image, boxes, (image.height, image.width),
                                 upsample_chunk, box_batch)
    return masks.cpu().numpy()


def encode_mask(mask, bbox, mask_format="polygon"):
    """
    Args:
        mask: (H, W) bool, SAM 2's mask; bbox: the annotation's COCO box.
    Returns:
        (segmentation, area, fell_back): polygons or RLE (str counts), the pixel count of
        ``mask``, and whether the box replaced an empty result.
    """
    area = float(mask.sum())
    x, y, w, h = bbox
    if mask_format == "polygon":
        contours, _ = cv2.findContours(
            mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE
        )
        polygons = [c.flatten().tolist() for c in contours]
        polygons = [p for p in polygons if len(p) > 4]
        if not polygons:
            return [[x, y, x + w, y, x + w, y + h, x, y + h]], area, True
        return polygons, area, False
    fell_back = not mask.any()
    if fell_back:
        mask = np.zeros_like(mask)
        mask[int(y) : int(np.ceil(y + h)), int(x) : int(np.ceil(x + w))] = True
        area = float(mask.sum())
    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle, area, fell_back


def read_progress(path, header):
    """
    The masks recorded in a progress file, {annotation index: [segmentation, area, fell_back]};
    creates the file (with ``header``) when missing. A line cut by an interruption is skipped
    and its image done again.
    """
    if not os.path.isfile(path):
        with open(path, "w") as f:
            f.write(json.dumps(header) + "\n")
        return {}
    with open(path) as f:
        lines = f.read().split("\n")
    if json.loads(lines[0]) != json.loads(json.dumps(header)):
        raise ValueError(
            "{} was written for another input or SAM 2 model; delete it to start over".format(path)
        )
    if lines[-1]:
        with open(path, "a") as f:
            f.write("\n")
    done = {}
    for line in lines[1:]:
        try:
            record = json.loads(line)
        except ValueError:
            continue  # the last line of an interrupted write
        done.update({int(k): v for k, v in record["masks"].items()})
    return done


def add_sam2_masks(data, image_root, prompter, progress_path, header, overwrite=False,
                   box_batch=64, upsample_chunk=64, max_images=0, mask_format="polygon"):
    """
    Fill the masks of ``data`` (a COCO dict, changed in place) image by image, recording each
    image in ``progress_path``.

    Returns:
        dict: "images" done in this call, "remaining" images, "masks", "box_fallbacks".
    """
    done = read_progress(progress_path, header)
    per_image = {}
    for index, ann in enumerate(data.get("annotations", [])):
        if needs_mask(ann, overwrite):
            per_image.setdefault(ann["image_id"], []).append(index)
    images = {img["id"]: img for img in data.get("images", [])}
    todo = [i for i in per_image if any(k not in done for k in per_image[i])]
    stats = {"images": 0, "remaining": len(todo), "masks": 0, "box_fallbacks": 0}
    with open(progress_path, "a") as progress:
        for image_id in tqdm(todo, desc="SAM 2 masks"):
            if max_images and stats["images"] >= max_images:
                break
            info = images[image_id]
            image = read_rgb(os.path.join(image_root, info["file_name"]))
            size = (int(info.get("width", image.width)), int(info.get("height", image.height)))
            if image.size != size:
                image = image.resize(size, Image.BICUBIC)
            indices = per_image[image_id]
            boxes = [data["annotations"][k]["bbox"] for k in indices]
            masks = image_masks(prompter, image, boxes, box_batch, upsample_chunk)
            record = {}
            for k, mask, box in zip(indices, masks, boxes):
                record[str(k)] = list(encode_mask(mask, box, mask_format))
            progress.write(json.dumps({"image_id": image_id, "masks": record}) + "\n")
            progress.flush()
            done.update({int(k): v for k, v in record.items()})
            stats["images"] += 1
            stats["remaining"] -= 1
    for k, (segmentation, area, _) in done.items():
        data["annotations"][k]["segmentation"] = segmentation
        data["annotations"][k]["area"] = area
    stats["masks"] = len(done)
    stats["box_fallbacks"] = sum(int(v[2]) for v in done.values())
    return stats


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
        args.box_batch, r.UPSAMPLE_CHUNK, args.max_images, args.mask_format,
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
