"""
Filling the memory bank from registered reference datasets.

Every non-crowd annotation of the reference dataset(s) is one shot of its category. The
references are sharded over processes (Detectron2's InferenceSampler), encoded, gathered and
written in dataset order, so every process holds the identical memory whatever the number of
processes.
"""
import logging
import os
import time
from collections import Counter, defaultdict

import torch
from detectron2.data import DatasetCatalog, MetadataCatalog, build_detection_test_loader
from detectron2.utils import comm
from tqdm import tqdm

from ..checkpoint import RefSegCheckpointer
from ..data.mappers import RefSegReferenceMapper
from ..data.reference_sources import PROVENANCE_KEY, shot_provenance

logger = logging.getLogger(__name__)


def unwrap_model(model):
    """The model inside a DistributedDataParallel wrapper, or the model itself."""
    return model.module if hasattr(model, "module") else model


def dataset_classes(dataset_name):
    """
    The categories of a registered dataset in contiguous order.

    Returns:
        (ids, names): ids is the list of dataset category ids (None when the dataset has no
        ``thing_dataset_id_to_contiguous_id``), names the list of ``thing_classes``.
    """
    meta = MetadataCatalog.get(dataset_name)
    if not hasattr(meta, "thing_classes"):
        DatasetCatalog.get(dataset_name)  # loaders such as load_coco_json set the metadata
    if not hasattr(meta, "thing_classes"):
        raise ValueError("Dataset {!r} has no thing_classes metadata".format(dataset_name))
    names = list(meta.thing_classes)
    id_map = meta.get("thing_dataset_id_to_contiguous_id", None)
    if not id_map:
        return None, names
    ids = [None] * len(id_map)
    for dataset_id, contiguous in id_map.items():
        ids[contiguous] = int(dataset_id)
    return ids, names


def check_image_files(dicts, what):
    """Raise, before any work, when image files of ``dicts`` are missing (lists them)."""
    missing = [d["file_name"] for d in dicts if not os.path.isfile(d["file_name"])]
    if missing:
        raise FileNotFoundError(
            "{} of {} image files of {} are missing, e.g.:\n  {}".format(
                len(missing), len(dicts), what, "\n  ".join(missing[:5])
            )
        )


def load_references(dataset_names):
    """
    Returns:
        dicts (list[dict]): the concatenated dataset dicts, each with "refseg_index" (its
            position, used to order the memory);
        class_ids (list[int]), class_names (list[str]).
    """
    dicts, classes = [], None
    for name in dataset_names:
        part = DatasetCatalog.get(name)
        ids, names = dataset_classes(name)
        ids = list(range(len(names))) if ids is None else ids
        if classes is None:
            classes = (name, ids, names)
        elif (ids, names) != classes[1:]:
            raise ValueError(
                "Reference datasets {!r} and {!r} have different categories:\n  {}\n  {}".format(
                    classes[0], name, list(zip(*classes[1:])), list(zip(ids, names))
                )
            )
        dicts.extend(part)
    dicts = [dict(d, refseg_index=i) for i, d in enumerate(dicts)]
    return dicts, classes[1], classes[2]


def fill_memory(cfg, model, dataset_names=None, with_provenance=False):
    """
    Encode the references of ``dataset_names`` (default ``cfg.DATASETS.REFERENCE``) and fill
    ``model.memory``. Every process must call it.

    Returns:
        dict: "images", "references" (annotations encoded), "sam2_masks" (masks made by SAM 2
        from boxes), "skipped" (references covering no patch sample), "seconds", "checksum"
        (sum of the memory's features, identical on every process) and, with
        ``with_provenance``, "provenance": per class, per memory slot, where it comes from
        (:func:`refseg_d2.data.reference_sources.shot_provenance`).
    """
    model = unwrap_model(model)
    names = tuple(dataset_names or cfg.DATASETS.REFERENCE)
    if not names:
        raise ValueError(
            "DATASETS.REFERENCE is empty: name the registered dataset(s) whose annotations are "
            "the references, or load a saved memory with MODEL.WEIGHTS"
        )
    start = time.perf_counter()
    dicts, class_ids, class_names = load_references(names)
    check_image_files(dicts, "the reference dataset(s) {}".format(names))
    shots = Counter(
        a["category_id"] for d in dicts for a in d.get("annotations", []) if not a.get("iscrowd", 0)
    )
    missing = [n for c, n in enumerate(class_names) if shots[c] == 0]
    if missing:
        raise ValueError(
            "Categories without any reference annotation in {}: {}. Every category of the "
            "reference dataset needs at least one.".format(names, missing)
        )
    logger.info(
        "Filling the memory from %s: %d images, %d annotations, %d classes",
        names, len(dicts), sum(shots.values()), len(class_names),
    )
    loader = build_detection_test_loader(
        dicts,
        mapper=RefSegReferenceMapper(cfg),
        batch_size=cfg.MODEL.REFSEG.MEMORY.IMAGES_PER_BATCH,
        num_workers=cfg.DATALOADER.NUM_WORKERS,
    )
    records = []
    with torch.no_grad():
        for batch in tqdm(loader, desc="memory", disable=not comm.is_main_process()):
            for inputs, out in zip(batch, model.encode_references(batch)):
                inst = inputs["instances"]
                for r in range(len(inst)):
                    records.append((
                        inputs["refseg_index"], int(inst.ann_index[r]), int(inst.gt_classes[r]),
                        out["features"][r].cpu(), bool(out["valid"][r]), bool(out["sam2_masks"][r]),
                        inst.crop_windows[r].tolist(), tuple(inst.image_size),
                    ))
    gathered = [r for part in comm.all_gather(records) for r in part]
    records = sorted(gathered, key=lambda r: (r[0], r[1]))  # dataset order
    _write_memory(model.memory, records, dicts, class_ids, class_names)
    stats = {
        "images": len(dicts),
        "references": len(records),
        "sam2_masks": sum(r[5] for r in records),
        "skipped": sum(not r[4] for r in records),
        "seconds": time.perf_counter() - start,
        "checksum": float(model.memory.instance_features.double().sum()),
    }
    if with_provenance:
        stats["provenance"] = _provenance(records, dicts, len(class_names))
    logger.info(
        "Memory filled in %.1fs: %s; %d reference masks made by SAM 2 from boxes; checksum %.10e",
        stats["seconds"], model.memory.extra_repr(), stats["sam2_masks"], stats["checksum"],
    )
    return stats


def _write_memory(memory, records, dicts, class_ids, class_names):
    per_class = defaultdict(list)
    for index, ann_index, label, feature, valid, *_ in records:
        if valid:
            per_class[label].append(feature)
        else:
            logger.warning(
                "Reference annotation %d of %s (class %s) covers no encoder patch sample: skipped",
                ann_index, dicts[index]["file_name"], class_names[label],
            )
    empty = [n for c, n in enumerate(class_names) if not per_class[c]]
    if empty:
        raise ValueError("No usable reference for categories {}".format(empty))
    memory.set(class_ids, class_names, [torch.stack(per_class[c]) for c in range(len(class_names))])


def _provenance(records, dicts, num_classes):
    """Per class, the provenance of its memory slots in memory order (valid records only)."""
    per_class = [[] for _ in range(num_classes)]
    for index, ann_index, label, _, valid, _, window, (height, width) in records:
        if valid:
            per_class[label].append(shot_provenance(dicts[index], ann_index, window, height, width))
    return per_class


def ensure_memory(cfg, model, force=False, save=True):
    """
    Fill the memory unless it is already filled (e.g. loaded with MODEL.WEIGHTS), then save it
    to OUTPUT_DIR/<MEMORY.SAVE_NAME>.pth (main process).

    Returns:
        bool: whether the memory was (re)filled.
    """
    model = unwrap_model(model)
    if model.memory.is_ready and not force:
        logger.info("Using the loaded memory: %s", model.memory.extra_repr())
        return False
    save = bool(save and cfg.MODEL.REFSEG.MEMORY.SAVE and cfg.OUTPUT_DIR)
    stats = fill_memory(cfg, model, with_provenance=save and comm.is_main_process())
    if save and comm.is_main_process():
        # The provenance lets tools/inspect_memory.py show the reference crops.
        RefSegCheckpointer(model, save_dir=cfg.OUTPUT_DIR).save(
            cfg.MODEL.REFSEG.MEMORY.SAVE_NAME, **{PROVENANCE_KEY: stats["provenance"]}
        )
    comm.synchronize()
    return True


def check_memory_matches(memory, dataset_name):
    """Raise when the memory's classes are not the dataset's (by category id and name)."""
    ids, names = dataset_classes(dataset_name)
    mem_ids, mem_names = memory.class_ids.tolist(), list(memory.class_names)
    if names != mem_names or (ids is not None and ids != mem_ids):
        raise ValueError(
            "The memory's classes do not match the categories of {!r}.\n  memory:  {}\n  "
            "dataset: {}".format(
                dataset_name, list(zip(mem_ids, mem_names)),
                list(zip(ids, names)) if ids is not None else names,
            )
        )
