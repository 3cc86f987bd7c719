"""
One validation pass over the reference datasets before any model work: every annotation that
will not be used as written is named (annotation id, image file, reason) with the action taken,
then the usable references per class are logged. Detectron2's loader and pycocotools drop some
records silently (annotations of images that are not listed, annotations whose polygons are all
invalid); for datasets read from a COCO-format file (metadata ``json_file``) those are found in
the file itself.

Actions: "error" (raised before any work), "skipped" (not a reference), "fallback" (used
otherwise than written, e.g. box-only: mask from SAM 2), "used without them" (invalid polygons
dropped, the others kept) and "used" (used as written, e.g. a degenerate box whose context crop
is not empty). Duplicate annotation ids are refused by Detectron2's loader itself, naming the
file.
"""
import logging
import math
import os
from collections import Counter
from dataclasses import dataclass

from detectron2.data import MetadataCatalog
from tabulate import tabulate

from ..utils.files import read_json
from ..utils.geometry import bbox_xywh, context_crop_window

logger = logging.getLogger(__name__)


@dataclass
class Finding:
    """An annotation that is not used as written."""

    dataset: str
    annotation: str      # "id 17" or "#3 of its image" when the dataset keeps no ids
    file_name: str
    reason: str
    action: str          # "error", "skipped", "fallback" or "used"

    def line(self):
        return "{}: annotation {} of {}: {} -> {}".format(
            self.dataset, self.annotation, self.file_name, self.reason, self.action
        )


def _polygon_problem(segm):
    """None, "some" or "all": which polygons of a COCO polygon list Detectron2 drops."""
    if not isinstance(segm, list) or not segm:
        return None
    bad = [p for p in segm if not (isinstance(p, list) and len(p) % 2 == 0 and len(p) >= 6)]
    return None if not bad else ("all" if len(bad) == len(segm) else "some")


def file_findings(dataset, data):
    """What Detectron2's loader and pycocotools drop, or change, in a COCO-format dict."""
    images = {img["id"]: img.get("file_name", "?") for img in data.get("images", [])}
    findings = []
    for ann in data.get("annotations", []):
        where = "id {}".format(ann.get("id"))
        file_name = images.get(ann.get("image_id"), "image id {}".format(ann.get("image_id")))
        if ann.get("image_id") not in images:
            findings.append(Finding(dataset, where, file_name,
                                    "its image is not listed in 'images'", "skipped"))
            continue
        problem = _polygon_problem(ann.get("segmentation"))
        if problem == "all" and not ann.get("iscrowd", 0):
            findings.append(Finding(dataset, where, file_name,
                                    "every polygon is invalid (fewer than 3 points)", "skipped"))
        elif problem == "some":
            findings.append(Finding(dataset, where, file_name,
                                    "polygons with fewer than 3 points", "used without them"))
    return findings


def loaded_annotation_ids(data, image_root):
    """
    {image file: ids of its annotations in the order Detectron2's loader keeps them} of a
    COCO-format dict (the loader drops annotations whose polygons are all invalid).
    """
    files = {img["id"]: os.path.join(image_root, img["file_name"]) for img in data.get("images", [])}
    ids = {}
    for ann in data.get("annotations", []):
        if ann.get("image_id") in files and _polygon_problem(ann.get("segmentation")) != "all":
            ids.setdefault(files[ann["image_id"]], []).append(ann.get("id"))
    return ids


def _where(ann, index, ids):
    if "id" in ann:
        return "id {}".format(ann["id"])
    if ids is not None and index < len(ids):
        return "id {}".format(ids[index])
    return "#{} of its image".format(index)


def dict_findings(dataset, dicts, num_classes, context_ratio, box_mask_source, ids=None):
    """
    What the reference mapper will skip, replace or refuse in dataset dicts.

    Args:
        ids (dict or None): see :func:`loaded_annotation_ids`, to name annotations by id.
    """
    findings = []
    for d in dicts:
        file_name = d.get("file_name", "?")
        for i, ann in enumerate(d.get("annotations", [])):
            where = _where(ann, i, (ids or {}).get(file_name))
            if ann.get("iscrowd", 0):
                findings.append(Finding(dataset, where, file_name, "crowd annotation", "skipped"))
                continue
            label = ann.get("category_id")
            if not isinstance(label, int) or not 0 <= label < num_classes:
                findings.append(Finding(dataset, where, file_name,
                                        "category {!r} is not a class".format(label), "error"))
                continue
            try:
                box = bbox_xywh(ann)
            except Exception as e:
                findings.append(Finding(dataset, where, file_name, "bad box ({})".format(e), "error"))
                continue
            if not all(math.isfinite(v) for v in box):
                findings.append(Finding(dataset, where, file_name,
                                        "box {} is not finite".format(box), "error"))
                continue
            if box[2] <= 0 or box[3] <= 0:
                reason = "degenerate box {} (XYWH, zero or negative size)".format(box)
            else:
                reason = None
            if "width" in d and "height" in d:
                window = context_crop_window(box, int(d["width"]), int(d["height"]), context_ratio)
                if window[2] <= window[0] or window[3] <= window[1]:
                    findings.append(Finding(dataset, where, file_name,
                                            reason or "box {} is outside the image".format(box),
                                            "skipped"))
                    continue
            if reason:
                findings.append(Finding(dataset, where, file_name, reason, "used"))
            if not ann.get("segmentation"):
                action = "fallback: mask made by SAM 2 from the box" if box_mask_source == "sam2" \
                    else "fallback: the box rectangle as mask"
                findings.append(Finding(dataset, where, file_name, "no segmentation", action))
    return findings


def _coco_file(dataset, json_file):
    """
    The COCO-format dict of a dataset's annotation file, or None when it has none or is not
    read by Detectron2's COCO loader (LVIS files name images by "coco_url", and their loader
    refuses invalid polygons instead of dropping them).
    """
    if not json_file or not os.path.isfile(json_file):
        return None
    data = read_json(json_file, "Annotation file of {}".format(dataset))
    images = data.get("images", []) if isinstance(data, dict) else []
    if not images or not all("file_name" in img for img in images):
        return None
    return data


def validate_references(parts, class_names, context_ratio, box_mask_source="sam2"):
    """
    Validate reference datasets; log every finding and the usable references per class.

    Args:
        parts (list[(str, list[dict])]): (dataset name, its dataset dicts), contiguous ids.
        class_names (list[str]): the C classes.
    Returns:
        Counter: usable references per class index.
    Raises:
        ValueError: an annotation that cannot be used as given ("error"), or a class left
            without references (listing what was dropped and why).
    """
    findings, all_ids = [], {}
    for name, dicts in parts:
        meta = MetadataCatalog.get(name)
        json_file, ids = meta.get("json_file", None), None
        data = _coco_file(name, json_file)
        if data is not None:
            findings.extend(file_findings(name, data))
            ids = loaded_annotation_ids(data, meta.get("image_root", ""))
        all_ids[name] = ids
        findings.extend(
            dict_findings(name, dicts, len(class_names), context_ratio, box_mask_source, ids)
        )
    errors = [f for f in findings if f.action == "error"]
    if errors:
        raise ValueError(
            "{} reference annotation(s) cannot be used:\n  {}".format(
                len(errors), "\n  ".join(f.line() for f in errors[:20])
            )
        )
    for f in findings:
        (logger.info if f.action.startswith("fallback") else logger.warning)(f.line())
    usable = Counter()
    skipped_windows = {(f.dataset, f.file_name, f.annotation) for f in findings if f.action == "skipped"}
    for name, dicts in parts:
        for d in dicts:
            ids = (all_ids[name] or {}).get(d.get("file_name", "?"))
            for i, ann in enumerate(d.get("annotations", [])):
                where = _where(ann, i, ids)
                if ann.get("iscrowd", 0) or (name, d.get("file_name", "?"), where) in skipped_windows:
                    continue
                usable[ann["category_id"]] += 1
    logger.info("Usable references per class:\n%s", tabulate(
        [[c, n, usable[c]] for c, n in enumerate(class_names)], headers=["index", "class", "references"]))
    empty = [n for c, n in enumerate(class_names) if usable[c] == 0]
    if empty:
        dropped = [f.line() for f in findings if f.action == "skipped"]
        raise ValueError(
            "Categories without any usable reference annotation in {}: {}. Every category of "
            "the reference dataset needs at least one.{}".format(
                [name for name, _ in parts], empty,
                " Dropped annotations:\n  " + "\n  ".join(dropped[:30]) if dropped else "",
            )
        )
    return usable
