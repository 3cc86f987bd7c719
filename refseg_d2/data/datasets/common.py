"""
Shared helpers of the benchmark datasets: where the data and the derived files live, clear
errors for missing files, atomic JSON writes, derived files that are rebuilt when their sources
change, and lazy COCO-format registration.

Derived files (ground truth restricted to the evaluated classes, sampled reference sets, VOC
converted to COCO format) are written once, at first use, under the cache folder
``$REFSEG_D2_CACHE`` (default ``$DETECTRON2_DATASETS/refseg_cache``). Each has a sidecar
``<file>.source.json`` recording the size and modification time of its sources and the
parameters it was built with; a change of either rebuilds it.
"""
import json
import logging
import os

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json
from iopath.common.file_io import file_lock

from ...utils.files import atomic_write, read_json

logger = logging.getLogger(__name__)

_FORMAT_VERSION = 1


def datasets_root():
    """The dataset root: ``$DETECTRON2_DATASETS`` (default ``datasets``), user-expanded."""
    return os.path.expanduser(os.getenv("DETECTRON2_DATASETS", "datasets"))


def cache_root(root=None):
    """The folder of derived files: ``$REFSEG_D2_CACHE`` or ``<root>/refseg_cache``."""
    return os.path.expanduser(
        os.getenv("REFSEG_D2_CACHE", os.path.join(root or datasets_root(), "refseg_cache"))
    )


def require_file(path, what):
    """Raise FileNotFoundError naming ``path`` when it is not a file."""
    if not os.path.isfile(path):
        raise FileNotFoundError(
            "{}: expected file {} does not exist (dataset root $DETECTRON2_DATASETS={!r}; see "
            "docs/BENCHMARKS.md for the expected layout)".format(
                what, path, datasets_root()
            )
        )
    return path


def load_json(path, what):
    """Read a JSON file; errors name it."""
    return read_json(require_file(path, what), what + ":")


def file_signature(path):
    """What a derived file depends on in a source file: real path, size, modification time."""
    st = os.stat(path)
    return {"path": os.path.realpath(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def derived_json(path, sources, params, build):
    """
    Return ``path``, (re)building it with ``build()`` (a JSON-serialisable object) unless it
    exists and was built from the same ``sources`` (files, which must exist) and ``params``.
    Safe when several processes call it at once (file lock, atomic write).
    """
    signature = {
        "version": _FORMAT_VERSION,
        "sources": [file_signature(s) for s in sources],
        "params": params,
    }
    sidecar = path + ".source.json"
    with file_lock(path):
        if os.path.isfile(path) and os.path.isfile(sidecar):
            try:
                with open(sidecar) as f:
                    if json.load(f) == json.loads(json.dumps(signature)):
                        return path
            except ValueError:
                pass
        logger.info("Writing %s", path)
        data = build()
        atomic_write(path, lambda f: json.dump(data, f), mode="w", what="a derived dataset file")
        atomic_write(sidecar, lambda f: json.dump(signature, f), mode="w",
                     what="a derived dataset file")
    return path


def check_category_ids(data, expected, source):
    """Raise when the categories ``expected`` ({id: name}) are not in ``data`` as given."""
    found = {c["id"]: c["name"] for c in data.get("categories", [])}
    wrong = {i: (n, found.get(i)) for i, n in expected.items() if found.get(i) != n}
    if wrong:
        raise ValueError(
            "{}: unexpected categories (id: (expected name, name in the file)): {}".format(
                source, wrong
            )
        )


def restrict_coco(data, category_ids):
    """
    A copy of a COCO dict whose annotations and categories are those of ``category_ids``.
    Every image is kept, with or without annotations.
    """
    keep = set(category_ids)
    out = {k: v for k, v in data.items() if k not in ("annotations", "categories")}
    out["categories"] = sorted(
        (c for c in data.get("categories", []) if c["id"] in keep), key=lambda c: c["id"]
    )
    out["annotations"] = [a for a in data.get("annotations", []) if a["category_id"] in keep]
    return out


def class_metadata(category_ids, names):
    """thing_classes and thing_dataset_id_to_contiguous_id for categories sorted by id."""
    order = sorted(range(len(category_ids)), key=lambda i: category_ids[i])
    return {
        "thing_classes": [names[i] for i in order],
        "thing_dataset_id_to_contiguous_id": {category_ids[i]: c for c, i in enumerate(order)},
    }


def register_lazy_coco(name, json_fn, image_root, metadata):
    """
    Register a COCO-format dataset whose JSON file is given by ``json_fn()`` (called at first
    use: it may check, convert or sample, and returns the path). Nothing is opened here.
    """
    DatasetCatalog.register(name, lambda: load_coco_json(json_fn(), image_root, name))
    MetadataCatalog.get(name).set(image_root=image_root, **metadata)


def restricted_json(out_path, source_json, categories, what):
    """
    The path of ``source_json`` restricted to ``categories`` ({id: name}, checked against the
    file): every image, the annotations and categories of those classes only. Written at first
    use, reused afterwards (rebuilt when the source file changes).
    """
    require_file(source_json, what)

    def build():
        data = load_json(source_json, what)
        check_category_ids(data, categories, source_json)
        return restrict_coco(data, sorted(categories))

    return derived_json(out_path, [source_json], {"categories": sorted(categories)}, build)
