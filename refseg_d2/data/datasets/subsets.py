"""
Parts of a registered dataset registered as datasets of their own, with its category metadata:
its first images, or a seeded subset of at most K annotations per class. They read nothing
until used and are registered once per name.
"""
import random
from collections import defaultdict

from detectron2.data import DatasetCatalog, MetadataCatalog


def _copy_metadata(name, new):
    DatasetCatalog.get(name)  # sets the category metadata of COCO-format datasets
    meta = {k: v for k, v in MetadataCatalog.get(name).as_dict().items() if k != "name"}
    MetadataCatalog.get(new).set(**meta)


def first_images(name, num_images):
    """Register and return ``<name>_bench_first<N>``: the first ``num_images`` of ``name``."""
    new = "{}_bench_first{}".format(name, num_images)
    if new not in DatasetCatalog.list():
        DatasetCatalog.register(new, lambda: DatasetCatalog.get(name)[:num_images])
        _copy_metadata(name, new)
    return new


def sample_per_class(dicts, shots, seed):
    """
    The dataset dicts that keep at most ``shots`` non-crowd annotations per class, drawn with
    ``random.Random(seed)`` class by class in id order; images left without one are dropped.
    """
    by_class = defaultdict(list)
    for i, d in enumerate(dicts):
        for j, a in enumerate(d.get("annotations", [])):
            if not a.get("iscrowd", 0):
                by_class[a["category_id"]].append((i, j))
    rng = random.Random(seed)
    chosen = set()
    for c in sorted(by_class):
        chosen.update(rng.sample(by_class[c], min(shots, len(by_class[c]))))
    out = []
    for i, d in enumerate(dicts):
        anns = [a for j, a in enumerate(d.get("annotations", [])) if (i, j) in chosen]
        if anns:
            out.append(dict(d, annotations=anns))
    return out


def shots_subset(name, shots, seed):
    """
    Register and return ``<name>_bench_<K>shot_seed<S>``: :func:`sample_per_class` of ``name``,
    with its classes (and an identity id map when it has none).
    """
    new = "{}_bench_{}shot_seed{}".format(name, shots, seed)
    if new in DatasetCatalog.list():
        return new
    DatasetCatalog.register(new, lambda: sample_per_class(DatasetCatalog.get(name), shots, seed))
    DatasetCatalog.get(name)  # sets the category metadata of COCO-format datasets
    meta = MetadataCatalog.get(name)
    MetadataCatalog.get(new).set(
        thing_classes=meta.thing_classes,
        thing_dataset_id_to_contiguous_id=meta.get("thing_dataset_id_to_contiguous_id", None)
        or {i: i for i in range(len(meta.thing_classes))},
    )
    return new
