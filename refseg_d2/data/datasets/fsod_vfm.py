"""
FSOD-VFM's own reference sets ("support" files of its repository, placed under
``$DETECTRON2_DATASETS/fsod_vfm/`` with the repository's ``data/`` layout):

- ``fsod_vfm_coco_novel_{10,30}shot_seed33``: ``coco/few_shot_{K}shot_seed33.json``, for
  ``coco_fsod_val_novel``;
- ``fsod_vfm_voc_split{1,2,3}_{1,2,3,5,10}shot_seed33``:
  ``Pascal/vocsplit/split{S}/{K}shot_seed33.json``, for ``voc_2007_test_novel{S}``;
- ``fsod_vfm_cdfsod_<dataset>_{1,5,10}shot``: ``CDFSOD/<folder>/annotations/{K}_shot_converted.json``,
  for ``cdfsod_<dataset>_test_all_images`` (every image of the test file, as FSOD-VFM tests).

A support file maps a class name to its references, ``{"dog": [{"image": "coco/train2017/x.jpg",
"bbox": [x, y, w, h]}, ...]}``; image paths are relative to the dataset root (FSOD-VFM's
``--data_dir``). Names are mapped to the category ids of the test set (as FSOD-VFM maps them
through its test JSON), read when the set is first loaded. References are box-only: FSOD-VFM
masks every reference with SAM 2 (``MEMORY.MASK_SOURCE sam2_box``).
"""
import os
from collections import OrderedDict

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode

from .cdfsod import CDFSOD_DATASETS
from .coco_fsod import TEST_NAME as COCO_TEST
from .common import class_metadata, load_json
from .voc_fewshot import NOVEL_CLASSES, novel_test_name

COCO_SHOTS = (10, 30)
VOC_SHOTS = (1, 2, 3, 5, 10)
CDFSOD_SHOTS = (1, 5, 10)


def test_categories(test_name):
    """{category id: name} of a registered test dataset (loaded if its metadata is not set)."""
    meta = MetadataCatalog.get(test_name)
    if not hasattr(meta, "thing_dataset_id_to_contiguous_id"):
        DatasetCatalog.get(test_name)
    id_map = meta.thing_dataset_id_to_contiguous_id
    return {int(i): meta.thing_classes[c] for i, c in id_map.items()}


def load_support_file(json_file, image_root, categories, name):
    """
    Read a support file (module docstring) as reference dataset dicts.

    Args:
        categories (dict): {category id: name}; every class of the file must be among them.
        name (str): the dataset name, set with its class metadata.
    Returns:
        list[dict]: one per image (in first-use order), box-only annotations (XYWH) with
        contiguous category ids (category-id order).
    """
    data = load_json(json_file, "FSOD-VFM support file of {}".format(name))
    if not isinstance(data, dict):
        raise ValueError("{}: expected {{class name: [{{image, bbox}}, ...]}}".format(json_file))
    ids_by_name = {n: i for i, n in categories.items()}
    unknown = sorted(set(data) - set(ids_by_name))
    if unknown:
        raise ValueError("{}: classes {} are not categories of the test set ({})".format(
            json_file, unknown, sorted(ids_by_name)))
    meta = class_metadata(list(categories), list(categories.values()))
    contiguous = meta["thing_dataset_id_to_contiguous_id"]
    per_image = OrderedDict()
    for class_name, samples in data.items():
        for k, sample in enumerate(samples):
            try:
                image, bbox = sample["image"], [float(v) for v in sample["bbox"]]
            except (KeyError, TypeError, ValueError) as e:
                raise ValueError("{}: reference {} of {!r} needs 'image' and 'bbox' [x, y, w, h]: "
                                 "{!r}".format(json_file, k, class_name, sample)) from e
            per_image.setdefault(os.path.join(image_root, image), []).append({
                "bbox": bbox, "bbox_mode": BoxMode.XYWH_ABS, "iscrowd": 0,
                "category_id": contiguous[ids_by_name[class_name]],
            })
    MetadataCatalog.get(name).set(**meta)
    return [{"file_name": f, "image_id": i, "annotations": anns}
            for i, (f, anns) in enumerate(per_image.items(), start=1)]


def _register(name, json_file, root, test_name):
    def load():
        return load_support_file(json_file, root, test_categories(test_name), name)

    DatasetCatalog.register(name, load)
    MetadataCatalog.get(name).set(json_file=json_file, image_root=root, reference_of=test_name)


def register_fsod_vfm(root):
    """Register FSOD-VFM's reference sets (module docstring) under the dataset root ``root``."""
    base = os.path.join(root, "fsod_vfm")
    for k in COCO_SHOTS:
        _register("fsod_vfm_coco_novel_{}shot_seed33".format(k),
                  os.path.join(base, "coco", "few_shot_{}shot_seed33.json".format(k)), root,
                  COCO_TEST)
    for split in NOVEL_CLASSES:
        for k in VOC_SHOTS:
            _register("fsod_vfm_voc_split{}_{}shot_seed33".format(split, k),
                      os.path.join(base, "Pascal", "vocsplit", "split{}".format(split),
                                   "{}shot_seed33.json".format(k)), root, novel_test_name(split))
    for key, (folder, _) in CDFSOD_DATASETS.items():
        for k in CDFSOD_SHOTS:
            _register("fsod_vfm_cdfsod_{}_{}shot".format(key, k),
                      os.path.join(base, "CDFSOD", folder, "annotations",
                                   "{}_shot_converted.json".format(k)), root,
                      "cdfsod_{}_test_all_images".format(key))
