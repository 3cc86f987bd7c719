"""
Building memory banks from registered reference datasets.

Every non-crowd annotation of the reference dataset(s) is one shot of its category. The
references are sharded over processes (Detectron2's InferenceSampler), encoded by the model's
reference encoder into :class:`ReferenceRecord` s, gathered and put in dataset order, so every
process builds the identical :class:`MemoryBank` whatever the number of processes.
"""
import logging
import os
import time

import torch
from detectron2.data import DatasetCatalog, MetadataCatalog, build_detection_test_loader
from detectron2.utils import comm
from tqdm import tqdm

from ..data.datasets import resolve_datasets
from ..data.mappers import RefSegReferenceMapper
from ..data.validation import validate_references
from ..modeling.memory import MemoryBank, RefSegCheckpointer, record_statistics
from ..utils.distributed import unwrap_model

logger = logging.getLogger(__name__)


def dataset_classes(dataset_name):
    """
    The categories of a registered dataset in contiguous order.

    Returns:
        (ids, names): ids is the list of dataset category ids (None when the dataset has no
        ``thing_dataset_id_to_contiguous_id``), names the list of ``thing_classes``.
    """
    resolve_datasets([dataset_name])
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
        class_ids (list[int]), class_names (list[str]);
        parts (list[(str, list[dict])]): each dataset's name and dicts.
    """
    dicts, classes, parts = [], None, []
    for name in resolve_datasets(list(dataset_names)):
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
        parts.append((name, part))
    dicts = [dict(d, refseg_index=i) for i, d in enumerate(dicts)]
    return dicts, classes[1], classes[2], parts


def prepare_references(cfg, names):
    """
    Load the reference datasets ``names`` and run the validation pass over them before any model
    work (errors name the dataset and annotation); missing image files are an error too.

    Returns:
        dicts, class_ids, class_names: as :func:`load_references` gives them;
        shots (dict): usable references per class (see ``validate_references``).
    """
    dicts, class_ids, class_names, parts = load_references(names)
    r = cfg.MODEL.REFSEG.MEMORY
    shots = validate_references(parts, class_names, r.CONTEXT_RATIO, r.BOX_MASK_SOURCE)
    check_image_files(dicts, "the reference dataset(s) {}".format(tuple(names)))
    return dicts, class_ids, class_names, shots


def encode_reference_dicts(cfg, model, dicts, desc="memory"):
    """
    Encode reference dataset dicts (each with "refseg_index"), sharded over processes by the
    test loader's InferenceSampler. Every process must call it.

    Returns:
        list[ReferenceRecord]: the records of every process, on every process (unordered).
    """
    loader = build_detection_test_loader(
        dicts,
        mapper=RefSegReferenceMapper(cfg),
        batch_size=cfg.MODEL.REFSEG.MEMORY.IMAGES_PER_BATCH,
        num_workers=cfg.DATALOADER.NUM_WORKERS,
    )
    records = []
    with torch.no_grad():
        for batch in tqdm(loader, desc=desc, disable=not comm.is_main_process()):
            records.extend(model.encode_references(batch))
    return [r for part in comm.all_gather(records) for r in part]


def build_memory(cfg, model, dataset_names=None, with_provenance=False):
    """
    Encode the references of ``dataset_names`` (default ``cfg.DATASETS.REFERENCE``) into a new
    :class:`MemoryBank`; the model is not changed. Every process must call it.

    Returns:
        memory (MemoryBank): on the model's device, with provenance when ``with_provenance``;
        stats (dict): "images", "references" (annotations encoded), "sam2_masks" (masks made by
        SAM 2 from boxes), "skipped" (references covering no patch sample), "seconds" and
        "checksum" (sum of the memory's features, identical on every process).
    """
    model = unwrap_model(model)
    names = tuple(dataset_names or cfg.DATASETS.REFERENCE)
    if not names:
        raise ValueError(
            "DATASETS.REFERENCE is empty: name the registered dataset(s) whose annotations are "
            "the references, or load a saved memory with MODEL.WEIGHTS"
        )
    start = time.perf_counter()
    dicts, class_ids, class_names, shots = prepare_references(cfg, names)
    logger.info(
        "Filling the memory from %s: %d images, %d annotations, %d classes",
        names, len(dicts), sum(shots.values()), len(class_names),
    )
    records = sorted(encode_reference_dicts(cfg, model, dicts), key=lambda r: r.order)
    memory = MemoryBank.from_records(records, class_ids, class_names, model.memory, with_provenance)
    stats = record_statistics(records, memory, len(dicts), time.perf_counter() - start)
    logger.info(
        "Memory filled in %.1fs: %s; %d reference masks made by SAM 2 from boxes; checksum %.10e",
        stats["seconds"], memory.extra_repr(), stats["sam2_masks"], stats["checksum"],
    )
    return memory, stats


def fill_memory(cfg, model, dataset_names=None, with_provenance=False):
    """
    :func:`build_memory`, then hand the memory to the model (``model.set_memory``).

    Returns:
        dict: the statistics of :func:`build_memory`.
    """
    memory, stats = build_memory(cfg, model, dataset_names, with_provenance)
    unwrap_model(model).set_memory(memory)
    return stats


def ensure_memory(cfg, model, force=False, save=True):
    """
    Fill the memory unless it is already filled (e.g. loaded with MODEL.WEIGHTS), then save it
    with the provenance of its slots to OUTPUT_DIR/<MEMORY.SAVE_NAME>.pth (main process; the
    folder is created).

    Returns:
        bool: whether the memory was (re)filled.
    """
    model = unwrap_model(model)
    if model.memory.is_ready and not force:
        logger.info("Using the loaded memory: %s", model.memory.extra_repr())
        return False
    save = bool(save and cfg.MODEL.REFSEG.MEMORY.SAVE_NAME and cfg.OUTPUT_DIR)
    fill_memory(cfg, model, with_provenance=save and comm.is_main_process())
    if save and comm.is_main_process():
        os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
        RefSegCheckpointer(model, save_dir=cfg.OUTPUT_DIR).save(cfg.MODEL.REFSEG.MEMORY.SAVE_NAME)
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
