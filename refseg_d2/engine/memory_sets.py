"""
The memories of several reference sets built together (the runs of a sweep).

Every set is loaded and validated first, as :func:`build_memory` does (errors name the set).
Then the reference images of all sets are encoded in one pass, each image that several sets hold
once, and each set's :class:`MemoryBank` is assembled from the records of its own annotations,
in its own order. Each set's memory is bit for bit the one ``build_memory`` makes from that set
alone (its checksum is compared in the tests).

What is shared, per reference image (file name and dataset size):

- *union* (annotations shared): the sets' annotations of the image are encoded as one input
  holding each distinct annotation once (same box, segmentation and crowd flag). This is exact
  when a crop's feature does not depend on the other crops encoded with it: the encoder in fp32
  on CPU without torch.compile (batch-invariant there, tested) and no mask that SAM 2 makes from a
  box (its box decoding rounds differently in another batch of boxes).
- *same entry* (everywhere else: CUDA, ACCEL.AMP, ACCEL.COMPILE, ``MEMORY.MASK_SOURCE
  sam2_box``, or an image with box-only annotations and ``BOX_MASK_SOURCE sam2``): the image is encoded once per distinct annotation
  list, i.e. shared between sets that hold it with the very same annotations.
"""
import dataclasses
import logging
import time
from collections import OrderedDict

import numpy as np

from ..modeling.memory import MemoryBank, record_statistics
from ..utils.distributed import unwrap_model
from ..utils.geometry import bbox_xywh
from ..utils.masks import has_segmentation
from .memory_filling import encode_reference_dicts, prepare_references

logger = logging.getLogger(__name__)


def _frozen(value):
    """A hashable copy of a JSON-like value (types kept apart: a list never equals a tuple)."""
    if isinstance(value, dict):
        return ("dict", tuple(sorted((str(k), _frozen(v)) for k, v in value.items())))
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, tuple(_frozen(v) for v in value))
    if isinstance(value, np.ndarray):
        return ("ndarray", str(value.dtype), value.shape, value.tobytes())
    return value


def annotation_key(ann):
    """What the reference mapper reads of an annotation: crowd flag, XYWH box, segmentation."""
    return (bool(ann.get("iscrowd", 0)), tuple(bbox_xywh(ann)), _frozen(ann.get("segmentation")))


def _box_only(ann):
    return not ann.get("iscrowd", 0) and not has_segmentation(ann.get("segmentation"))


def crops_encode_independently(cfg, model):
    """
    Whether a reference crop's feature is independent of the crops batched with it (never when
    SAM 2 masks every reference from its box: MEMORY.MASK_SOURCE sam2_box).
    """
    r = cfg.MODEL.REFSEG
    return (unwrap_model(model).device.type == "cpu" and not r.ACCEL.AMP and not r.ACCEL.COMPILE
            and r.MEMORY.MASK_SOURCE == "annotation")


def plan_units(dicts_per_set, union, box_mask_source):
    """
    Group the reference images of all sets into the inputs to encode ("units").

    Args:
        dicts_per_set (OrderedDict): set name -> its concatenated reference dataset dicts.
        union (bool): merge the annotation lists of an image across sets (see the module
            docstring); otherwise only identical lists share a unit.
        box_mask_source (str): MEMORY.BOX_MASK_SOURCE (images with SAM 2 box masks never merge).
    Returns:
        units (list[dict]): dataset dicts to encode, each with the unit's "annotations";
        placements (OrderedDict): set name -> list of (image index, annotation index, label,
            unit, annotation index in the unit), in the set's order.
    """
    units, positions, unit_of, placements = [], [], {}, OrderedDict()
    for set_name, dicts in dicts_per_set.items():
        where = placements[set_name] = []
        for i, d in enumerate(dicts):
            anns = d.get("annotations", [])
            if not anns:
                continue
            keys = [annotation_key(a) for a in anns]
            image = (d["file_name"], d.get("height"), d.get("width"))
            merge = union and not (box_mask_source == "sam2" and any(_box_only(a) for a in anns))
            unit_key = ("union", image) if merge else ("entry", image, tuple(keys))
            u = unit_of.get(unit_key)
            if u is None:
                u = unit_of[unit_key] = len(units)
                base = {k: v for k, v in d.items() if k not in ("annotations", "refseg_index")}
                units.append(dict(base, annotations=[] if merge else list(anns)))
                positions.append({})
            if merge:
                at = []
                for ann, key in zip(anns, keys):
                    if key not in positions[u]:
                        positions[u][key] = len(units[u]["annotations"])
                        units[u]["annotations"].append(ann)
                    at.append(positions[u][key])
            else:
                at = range(len(anns))
            where.extend(
                (i, j, int(a["category_id"]), u, p) for j, (a, p) in enumerate(zip(anns, at))
            )
    return units, placements


def encode_units(cfg, model, units):
    """
    Encode the units (sharded over processes, gathered on every process).

    Returns:
        dict: (unit, annotation index in the unit) -> ReferenceRecord.
    """
    dicts = [dict(d, refseg_index=u) for u, d in enumerate(units)]
    return {r.order: r for r in encode_reference_dicts(cfg, model, dicts, "memories")}


def build_memories(cfg, model, reference_sets, with_provenance=False):
    """
    :func:`build_memory` of several reference sets at once, each image encoded once for all the
    sets that hold it (see the module docstring). Every process must call it.

    Args:
        reference_sets (dict): set name -> reference dataset names (a set's DATASETS.REFERENCE).
        with_provenance (bool): give the memories the provenance of their slots.
    Returns:
        OrderedDict: set name -> (MemoryBank, stats), in the order of ``reference_sets``, each as
        ``build_memory(cfg, model, names)`` returns it for that set alone, except stats["seconds"]:
        the time of the whole call.
    """
    model = unwrap_model(model)
    start = time.perf_counter()
    prepared = OrderedDict()
    for set_name, names in reference_sets.items():
        names = tuple(names or ())
        if not names:
            raise ValueError("Reference set {!r} names no reference dataset".format(set_name))
        try:
            prepared[set_name] = prepare_references(cfg, names)
        except (ValueError, FileNotFoundError) as e:
            what = "Reference set {!r} ({})".format(set_name, ", ".join(names))
            raise type(e)("{}: {}".format(what, e)) from e
    union = crops_encode_independently(cfg, model)
    units, placements = plan_units(
        OrderedDict((s, p[0]) for s, p in prepared.items()), union,
        cfg.MODEL.REFSEG.MEMORY.BOX_MASK_SOURCE,
    )
    wanted = sum(len(w) for w in placements.values())
    logger.info(
        "Filling %d memories: %d reference annotations of %d images over the sets; %d images "
        "with %d annotations to encode (%s)", len(prepared), wanted,
        sum(len(p[0]) for p in prepared.values()), len(units),
        sum(len(u["annotations"]) for u in units),
        "annotations shared" if union else "identical image entries shared",
    )
    encoded = encode_units(cfg, model, units)
    out = OrderedDict()
    for set_name, (dicts, class_ids, class_names, _) in prepared.items():
        records = [
            dataclasses.replace(encoded[(u, p)], dataset_index=i, annotation_index=j, label=label)
            for i, j, label, u, p in placements[set_name] if (u, p) in encoded
        ]
        try:
            memory = MemoryBank.from_records(records, class_ids, class_names, model.memory,
                                             with_provenance)
        except ValueError as e:
            raise ValueError("Reference set {!r}: {}".format(set_name, e)) from e
        stats = record_statistics(records, memory, len(dicts), time.perf_counter() - start)
        logger.info("Memory of %s: %s; checksum %.10e", set_name, memory.extra_repr(),
                    stats["checksum"])
        out[set_name] = (memory, stats)
    logger.info("%d memories filled in %.1fs", len(out), time.perf_counter() - start)
    return out
