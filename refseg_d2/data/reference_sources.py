"""
Reading references from the formats users have, as Detectron2 dataset dicts that
``fill_memory`` encodes like any registered dataset.

Three sources:

* ``coco``: a COCO-format file and its image folder (``register_coco_instances``). An annotation
  without ``segmentation`` is box-only.
* ``boxes``: box-only references in a small JSON file, one record per reference::

      {"categories": ["cat", "dog"],                       # optional, gives the class order
       "references": [{"file_name": "a.jpg", "category": "cat", "box": [x0, y0, x1, y1]},
                      {"file_name": "b.jpg", "category": "dog", "bbox": [x, y, w, h]}]}

  ``box`` is XYXY, ``bbox`` is COCO's XYWH; a bare list of records is accepted too. File names
  are relative to the JSON file's folder. SAM 2 makes each reference's mask from its box
  (``MODEL.REFSEG.MEMORY.BOX_MASK_SOURCE``).
* ``folder``: one sub-folder per class, named after the class, holding images and their masks:
  ``<root>/<class>/<stem>.<ext>`` and ``<root>/<class>/<stem>_mask.png`` (two grey levels: non-zero = object;
  more levels, e.g. a soft edge: >= 128 = object, with a warning naming the file).
  Each image is one reference of its class.

Category ids of the ``boxes`` and ``folder`` sources are 1..C in class order.

:func:`reference_provenance` gives, for a memory saved without it, where each slot comes from
(as a memory records it, by the reference mapper's rule), so that reports can show the crops.
"""
import logging
import os

import pycocotools.mask as mask_util
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json
from detectron2.structures import BoxMode

from ..modeling.memory.records import ReferenceRecord
from ..utils.catalog import unregister
from ..utils.files import read_json
from ..utils.images import image_size, is_image_file, read_mask
from ..utils.masks import decode_segmentation, encode_mask, segmentation_rle
from .mappers import RefSegReferenceMapper

logger = logging.getLogger(__name__)

MASK_SUFFIX = "_mask"
SOURCE_KINDS = ("coco", "boxes", "folder")


def mask_annotation(mask, category_id):
    """A dataset-dict annotation (contiguous category_id) for an (H, W) bool mask."""
    rle = encode_mask(mask)
    return {
        "bbox": [float(v) for v in mask_util.toBbox(rle)],
        "bbox_mode": BoxMode.XYWH_ABS,
        "segmentation": rle,
        "category_id": int(category_id),
        "iscrowd": 0,
    }


def _check_box(box, what):
    if len(box) != 4 or not all(isinstance(v, (int, float)) for v in box):
        raise ValueError("{}: a box needs 4 numbers, got {!r}".format(what, box))
    if box[2] <= box[0] or box[3] <= box[1]:
        raise ValueError("{}: empty box {} (XYXY)".format(what, list(box)))


def load_box_references(json_file):
    """
    Read a box-only reference file (format in the module docstring).

    Returns:
        dicts (list[dict]): one per image, annotations with XYXY_ABS boxes and contiguous
            category ids; class_ids (list[int]): 1..C; class_names (list[str]).
    """
    data = read_json(json_file, "Box reference file")
    records = data if isinstance(data, list) else data.get("references")
    if not isinstance(records, list) or not records:
        raise ValueError("{} holds no 'references' list".format(json_file))
    explicit = bool(isinstance(data, dict) and data.get("categories"))
    names = [str(n) for n in data["categories"]] if explicit else []
    root = os.path.dirname(os.path.abspath(json_file))
    per_image = {}
    for i, rec in enumerate(records):
        what = "{}, reference {}".format(json_file, i)
        missing = [k for k in ("file_name", "category") if k not in rec]
        if missing or ("box" in rec) == ("bbox" in rec):
            raise ValueError(
                "{}: needs 'file_name', 'category' and one of 'box' (XYXY) or 'bbox' (XYWH), "
                "got keys {}".format(what, sorted(rec))
            )
        box = list(rec["box"]) if "box" in rec else list(rec["bbox"])
        if "bbox" in rec and len(box) == 4:
            box = [box[0], box[1], box[0] + box[2], box[1] + box[3]]
        _check_box(box, what)
        name = str(rec["category"])
        if name not in names:
            if explicit:
                raise ValueError("{}: category {!r} is not in 'categories'".format(what, name))
            names.append(name)
        file_name = os.path.join(root, rec["file_name"])
        per_image.setdefault(file_name, []).append((name, box))
    if not explicit:
        names = sorted(names)
    index = {n: c for c, n in enumerate(names)}
    dicts = [
        {
            "file_name": file_name,
            "image_id": image_id,
            "annotations": [
                {"bbox": box, "bbox_mode": BoxMode.XYXY_ABS, "category_id": index[name],
                 "iscrowd": 0}
                for name, box in anns
            ],
        }
        for image_id, (file_name, anns) in enumerate(per_image.items(), start=1)
    ]
    return dicts, list(range(1, len(names) + 1)), names


def load_folder_references(root):
    """
    Read a class-folder layout (format in the module docstring).

    Returns:
        dicts (list[dict]): one per image, one mask annotation each (contiguous category id);
        class_ids (list[int]): 1..C; class_names (list[str]): the sorted folder names.
    """
    if not os.path.isdir(root):
        raise FileNotFoundError("Reference folder not found: {}".format(root))
    names = sorted(n for n in os.listdir(root) if os.path.isdir(os.path.join(root, n)))
    if not names:
        raise ValueError(
            "{} has no class sub-folder (expected <root>/<class>/<image>)".format(root)
        )
    dicts = []
    for label, name in enumerate(names):
        folder = os.path.join(root, name)
        images = sorted(
            f for f in os.listdir(folder)
            if is_image_file(f) and not os.path.splitext(f)[0].endswith(MASK_SUFFIX)
        )
        if not images:
            raise ValueError("Class folder {} holds no image".format(folder))
        for file in images:
            file_name = os.path.join(folder, file)
            mask_file = os.path.join(folder, os.path.splitext(file)[0] + MASK_SUFFIX + ".png")
            if not os.path.isfile(mask_file):
                raise FileNotFoundError(
                    "No mask {} for reference image {}".format(mask_file, file_name)
                )
            mask = read_mask(mask_file)
            width, height = image_size(file_name)
            if mask.shape != (height, width):
                raise ValueError(
                    "Mask {} is {}x{} but its image {} is {}x{}".format(
                        mask_file, mask.shape[1], mask.shape[0], file_name, width, height
                    )
                )
            if not mask.any():
                raise ValueError("Mask {} is empty".format(mask_file))
            dicts.append({
                "file_name": file_name,
                "image_id": len(dicts) + 1,
                "height": height,
                "width": width,
                "annotations": [mask_annotation(mask, label)],
            })
    return dicts, list(range(1, len(names) + 1)), names


def register_reference_dicts(name, dicts, class_ids, class_names):
    """
    Register dataset dicts with contiguous category ids under ``name`` (replacing an earlier
    registration), with the metadata ``fill_memory`` reads.
    """
    unregister(name)
    frozen = list(dicts)
    DatasetCatalog.register(name, lambda: [dict(d) for d in frozen])
    MetadataCatalog.get(name).set(
        thing_classes=list(class_names),
        thing_dataset_id_to_contiguous_id={int(i): c for c, i in enumerate(class_ids)},
        evaluator_type="coco",
    )
    return name


def register_coco_file(name, json_file, image_root):
    """
    Register a COCO-format file as the dataset ``name`` (replacing an earlier registration),
    as ``register_coco_instances`` does, keeping each annotation's "id" so that messages can
    name it.
    """
    unregister(name)
    DatasetCatalog.register(
        name, lambda: load_coco_json(json_file, image_root, name, extra_annotation_keys=["id"])
    )
    MetadataCatalog.get(name).set(json_file=json_file, image_root=image_root, evaluator_type="coco")
    return name


def register_reference_source(name, kind, path, image_root=None):
    """
    Register a reference source as the dataset ``name``.

    Args:
        kind (str): "coco" (``path`` = JSON, ``image_root`` = its images), "boxes" (``path`` =
            box JSON) or "folder" (``path`` = class-folder root).
    Returns:
        str: ``name``.
    """
    if kind == "coco":
        if not os.path.isfile(path):
            raise FileNotFoundError("COCO reference file not found: {}".format(path))
        return register_coco_file(name, path, image_root or os.path.dirname(path))
    loaders = {"boxes": load_box_references, "folder": load_folder_references}
    if kind not in loaders:
        raise ValueError("Unknown reference source {!r}; known: {}".format(kind, SOURCE_KINDS))
    dicts, class_ids, class_names = loaders[kind](path)
    logger.info("%s references from %s: %d images, classes %s", kind, path, len(dicts), class_names)
    return register_reference_dicts(name, dicts, class_ids, class_names)




def reference_provenance(dicts, num_classes, context_ratio, apply_exif=False):
    """
    Where each memory slot comes from, in the order a memory of ``dicts`` holds its slots
    (dataset order; the annotations :meth:`RefSegReferenceMapper.reference_annotations` keeps),
    as :meth:`ReferenceRecord.provenance` records it.

    Args:
        dicts (list[dict]): the reference dataset dicts (contiguous category ids).
        num_classes (int): C.
    Returns:
        list (C) of lists of provenance dicts.
    """
    mapper = RefSegReferenceMapper(context_ratio=context_ratio, sam_input_size=0,
                                   apply_exif=apply_exif)
    per_class = [[] for _ in range(num_classes)]
    for d in dicts:
        if not any(not a.get("iscrowd", 0) for a in d.get("annotations", [])):
            continue
        if "width" in d and "height" in d:
            width, height = int(d["width"]), int(d["height"])
        else:
            width, height = image_size(d["file_name"], apply_exif)
        for i, ann, box, window in mapper.reference_annotations(d, width, height):
            segm = ann.get("segmentation")
            record = ReferenceRecord(
                file_name=d["file_name"], dataset_index=0, annotation_index=i,
                label=ann["category_id"], feature=None, valid=True, mask_from_sam2=False,
                crop_window=window, image_size=(height, width), box=box,
                segmentation=segmentation_rle(segm, decode_segmentation(segm, height, width)),
            )
            per_class[record.label].append(record.provenance())
    return per_class
