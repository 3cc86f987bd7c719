"""
CD-FSOD, the cross-domain few-shot detection benchmark (the authors'
``scripts/matching_cdfsod_pipeline.sh``), in the layout of its release (CD-ViTO):

    <root>/<Folder>/annotations/{1_shot,5_shot,10_shot,test}.json
    <root>/<Folder>/train/     reference (shot) images
    <root>/<Folder>/test/      test images

Registered names, for each dataset key of :data:`CDFSOD_DATASETS` and K in 1, 5, 10:

- ``cdfsod_<key>_<K>shot``: the release's K-shot file turned into references as the authors'
  ``coco_to_pkl.py`` does (:func:`authors_reference_ids`): an image with n annotations of a
  class gives n copies of its first one, and a class with fewer than K references gets copies
  of random ones (``random.seed(42)``). Boxes only: the memory filling makes their masks with
  SAM 2.
- ``cdfsod_<key>_<K>shot_all_instances``: every annotation of the K-shot file once, no copies
  (a deviation from the authors, off unless named).
- ``cdfsod_<key>_test``: the test images that have at least one annotation, every class, COCO
  AP (bbox). The authors evaluate ``test_with_segm.json``, from which their mask tool drops
  the images without annotations; ``cdfsod_<key>_test_all_images`` keeps them (the release's
  whole test set, as fine-tuned CD-FSOD methods are evaluated).
- ``..._with_segm`` before those suffixes: the same from ``<name>_with_segm.json`` next to the
  release file (the authors' naming), made by ``tools/add_sam2_masks.py``; the test one gives
  segm AP.

The category names of a file are checked against the benchmark's class list at first use.
"""
import logging
import os
import random
from collections import Counter, OrderedDict

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json

from ..ground_truth import register_ground_truth
from .common import cache_root, derived_json, load_json, require_file

logger = logging.getLogger(__name__)

# key -> (folder of the release, class names)
CDFSOD_DATASETS = {
    "artaxor": ("ArTaxOr", (
        "Araneae", "Coleoptera", "Diptera", "Hemiptera", "Hymenoptera", "Lepidoptera", "Odonata",
    )),
    "clipart1k": ("clipart1k", (
        "sheep", "chair", "boat", "bottle", "diningtable", "sofa", "cow", "motorbike", "car",
        "aeroplane", "cat", "train", "person", "bicycle", "pottedplant", "bird", "dog", "bus",
        "tvmonitor", "horse",
    )),
    "dior": ("DIOR", (
        "Expressway-Service-area", "Expressway-toll-station", "airplane", "airport",
        "baseballfield", "basketballcourt", "bridge", "chimney", "dam", "golffield",
        "groundtrackfield", "harbor", "overpass", "ship", "stadium", "storagetank",
        "tenniscourt", "trainstation", "vehicle", "windmill",
    )),
    "deepfish": ("FISH", ("fish",)),
    "neudet": ("NEU-DET", (
        "crazing", "inclusion", "patches", "pitted_surface", "rolled-in_scale", "scratches",
    )),
    "uodd": ("UODD", ("seacucumber", "seaurchin", "scallop")),
}
SHOTS = (1, 5, 10)
# The seed of the authors' coco_to_pkl.py (random.seed(42) at import).
AUTHORS_PKL_SEED = 42


def checked_json(json_file, key, name):
    """
    The COCO dict of ``json_file``; raise when its categories are not the class list of
    dataset ``key``.
    """
    data = load_json(json_file, name)
    names = sorted(c["name"] for c in data.get("categories", []))
    expected = sorted(CDFSOD_DATASETS[key][1])
    if names != expected:
        raise ValueError(
            "{}: the categories of {} are {}, CD-FSOD {} has {}".format(
                name, json_file, names, CDFSOD_DATASETS[key][0], expected
            )
        )
    return data


def authors_reference_ids(data, shots, seed=AUTHORS_PKL_SEED, source="<dict>"):
    """
    The references the authors' ``coco_to_pkl.py`` makes of a K-shot COCO file.

    Per category (in order of first appearance in the annotations), its annotations are grouped
    per image (images in order of first appearance); an image with n of them gives n entries
    that all use its first annotation. A category with fewer than ``shots`` entries is then
    completed with ``random.choices`` of its entries, one RNG stream seeded once with ``seed``
    and drawn category after category. A category with more than ``shots`` entries is kept
    whole with a warning (the authors' memory filling stops with an error).

    Args:
        data (dict): the COCO-format K-shot file.
    Returns:
        OrderedDict: category id -> list of annotation ids, with repeats (one per reference).
    """
    per_cat = OrderedDict()
    for ann in data.get("annotations", []):
        per_image = per_cat.setdefault(ann["category_id"], OrderedDict())
        per_image.setdefault(ann["image_id"], []).append(ann["id"])
    rng = random.Random(seed)
    out = OrderedDict()
    for cat_id, per_image in per_cat.items():
        entries = [ids[0] for ids in per_image.values() for _ in ids]
        if len(entries) < shots:
            entries += rng.choices(entries, k=shots - len(entries))
        elif len(entries) > shots:
            logger.warning(
                "%s: category %s has %d annotations for %d shots; all are used (the authors' "
                "code stops here with an error)", source, cat_id, len(entries), shots,
            )
        out[cat_id] = entries
    return out


def _authors_references(name, key, json_file, image_root, shots):
    def load():
        data = checked_json(json_file, key, name)
        picks = authors_reference_ids(data, shots, source=json_file)
        dicts = load_coco_json(json_file, image_root, name, extra_annotation_keys=["id"])
        uses = Counter(ann_id for ids in picks.values() for ann_id in ids)
        out = []
        for d in dicts:
            anns = [a for a in d.get("annotations", []) for _ in range(uses[a["id"]])]
            if anns:
                out.append(dict(d, annotations=anns))
        return out

    return load


def _whole_file(name, key, json_file, image_root):
    def load():
        checked_json(json_file, key, name)
        return load_coco_json(json_file, image_root, name)

    return load


def annotated_images_only(data):
    """A copy of a COCO dict without the images that have no annotation."""
    annotated = {a["image_id"] for a in data.get("annotations", [])}
    return dict(data, images=[img for img in data.get("images", []) if img["id"] in annotated])


def _annotated_test(name, key, json_file, out):
    def prepare():
        require_file(json_file, name)

        def build():
            return annotated_images_only(checked_json(json_file, key, name))

        return derived_json(out, [json_file], {"annotated_images_only": True}, build)

    return prepare


def _from_prepared(name, prepare, image_root):
    return lambda: load_coco_json(prepare(), image_root, name)


def register_cdfsod(root):
    cache = os.path.join(cache_root(root), "cdfsod")
    for key, (folder, _) in CDFSOD_DATASETS.items():
        base = os.path.join(root, folder)
        ann_dir = os.path.join(base, "annotations")
        train, test = os.path.join(base, "train"), os.path.join(base, "test")
        test_name = "cdfsod_{}_test".format(key)
        for segm in ("", "_with_segm"):
            for k in SHOTS:
                json_file = os.path.join(ann_dir, "{}_shot{}.json".format(k, segm))
                name = "cdfsod_{}_{}shot{}".format(key, k, segm)
                meta = dict(json_file=json_file, image_root=train, shots=k, reference_of=test_name)
                DatasetCatalog.register(name, _authors_references(name, key, json_file, train, k))
                MetadataCatalog.get(name).set(**meta)
                name += "_all_instances"
                DatasetCatalog.register(name, _whole_file(name, key, json_file, train))
                MetadataCatalog.get(name).set(**meta)

            json_file = os.path.join(ann_dir, "test{}.json".format(segm))
            meta = dict(image_root=test, evaluator_type="fewshot_coco")
            name = test_name + segm
            out = os.path.join(cache, "{}_test{}.json".format(folder, segm))
            prepare = _annotated_test(name, key, json_file, out)
            DatasetCatalog.register(name, _from_prepared(name, prepare, test))
            MetadataCatalog.get(name).set(json_file=out, **meta)
            register_ground_truth(name, prepare)

            name += "_all_images"
            DatasetCatalog.register(name, _whole_file(name, key, json_file, test))
            MetadataCatalog.get(name).set(json_file=json_file, **meta)
            register_ground_truth(name, lambda name=name, f=json_file: require_file(f, name))
