"""
Benchmark datasets on tiny fake trees with the real layouts (COCO 2017, VOC XML, CD-FSOD):
registration, ground truth restricted to the evaluated classes, sampled references, errors.
The builders are shared with the other test_benchmark_* modules.
"""
import json
import os
import random
import subprocess
import sys

import numpy as np
import pytest
from common import REPO
from detectron2.data import DatasetCatalog, MetadataCatalog
from PIL import Image

import refseg_d2.data.datasets  # noqa: F401  registers the benchmark datasets
from refseg_d2.data.datasets import resolve_datasets
from refseg_d2.data.datasets.builtin import register_all, register_reference_dataset
from refseg_d2.data.datasets.cdfsod import CDFSOD_DATASETS, authors_reference_ids
from refseg_d2.data.datasets.coco_fsod import COCO_THING_CLASSES, NOVEL_IDS
from refseg_d2.data.datasets.coco20i import split_category_ids
from refseg_d2.data.ground_truth import prepare_ground_truth

PREFIXES = ("coco_fsod_", "coco20i_", "voc_0712_", "voc_2007_test_", "voc_fewshot_", "voc_tfa_",
            "cdfsod_", "coco_tfa_", "coco_gfsod_", "lvis_v1_train_", "fsod_vfm_")
BASE_ID = 8  # truck, not a novel class


def register_under(root):
    """Register every benchmark dataset again, under ``root``."""
    for name in DatasetCatalog.list():
        if name.startswith(PREFIXES):
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)
    register_all(str(root))


def _square(x, y, s):
    return [[x, y, x + s, y, x + s, y + s, x, y + s]]


def _write_png(path, seed, size=(64, 64)):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    rng = np.random.RandomState(seed)
    Image.fromarray(rng.randint(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path)


def make_coco_tree(root, per_class=2, images=False):
    """
    ``<root>/coco``: train2017 has, per novel class, ``per_class`` 64 x 64 images with one valid
    annotation of it, a base-class object and an invalid (too small) annotation of the class;
    val2017 has 4 images, the last without any novel object. All 80 categories are listed.
    """
    cats = [{"id": i, "name": n, "supercategory": "x"} for i, n in COCO_THING_CLASSES.items()]

    def ann(ann_id, image_id, cat, x, y, s, **extra):
        return dict({"id": ann_id, "image_id": image_id, "category_id": cat, "bbox": [x, y, s, s],
                     "area": s * s, "iscrowd": 0, "segmentation": _square(x, y, s)}, **extra)

    train = {"images": [], "annotations": [], "categories": cats}
    for c, cat in enumerate(NOVEL_IDS):
        for k in range(per_class):
            image_id = 1000 + c * 10 + k
            train["images"].append({"id": image_id, "file_name": "{}.png".format(image_id),
                                    "width": 64, "height": 64})
            n = len(train["annotations"])
            train["annotations"] += [
                ann(n + 1, image_id, cat, 12, 12, 40),
                ann(n + 2, image_id, BASE_ID, 2, 2, 8),
                ann(n + 3, image_id, cat, 30, 30, 8),
            ]
    val = {"images": [], "annotations": [], "categories": cats}
    for i in range(4):
        val["images"].append({"id": 1 + i, "file_name": "{}.png".format(1 + i), "width": 64,
                              "height": 64})
        if i < 3:
            n = len(val["annotations"])
            val["annotations"].append(ann(n + 1, 1 + i, NOVEL_IDS[i], 8, 8, 30))
        val["annotations"].append(ann(len(val["annotations"]) + 1, 1 + i, BASE_ID, 40, 40, 20))
    val["annotations"].append(ann(len(val["annotations"]) + 1, 1, 1, 0, 0, 64, iscrowd=1))
    os.makedirs(os.path.join(root, "coco", "annotations"), exist_ok=True)
    for split, data in (("train2017", train), ("val2017", val)):
        ann_file = os.path.join(root, "coco", "annotations", "instances_{}.json".format(split))
        with open(ann_file, "w") as f:
            json.dump(data, f)
        if images:
            for img in data["images"]:
                _write_png(os.path.join(root, "coco", split, img["file_name"]), img["id"])
    return train, val


def _voc_xml(path, width, height, objects):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    objs = "".join(
        "<object><name>{}</name><pose>Unspecified</pose><truncated>0</truncated>"
        "<difficult>{}</difficult><bndbox><xmin>{}</xmin><ymin>{}</ymin><xmax>{}</xmax>"
        "<ymax>{}</ymax></bndbox></object>".format(n, d, *box)
        for n, d, box in objects
    )
    with open(path, "w") as f:
        f.write("<annotation><size><width>{}</width><height>{}</height><depth>3</depth></size>"
                "{}</annotation>".format(width, height, objs))


def make_voc_tree(root, test_objects=None, images=False):
    """
    VOC2007 (trainval: 000001-000005, test: 000010-000011) and VOC2012 (trainval: 2008_000001,
    2008_000002), 200 x 150 images (written with ``images``). Every novel class of split 1 has
    valid objects in 3 trainval images; 000001 has a difficult bird listed first in its XML.
    """
    trainval07 = {
        "000001": [("bird", 1, (60, 40, 120, 100)), ("person", 0, (20, 20, 60, 60)),
                   ("bird", 0, (100, 50, 160, 110))],
        "000002": [("bus", 0, (20, 20, 80, 80)), ("cow", 0, (100, 30, 160, 90))],
        "000003": [("motorbike", 0, (20, 20, 80, 80)), ("sofa", 0, (100, 30, 160, 90))],
        "000004": [("bird", 0, (30, 30, 90, 90)), ("bus", 0, (100, 30, 160, 90))],
        "000005": [("cow", 0, (30, 30, 90, 90)), ("sofa", 0, (100, 30, 160, 90))],
    }
    trainval12 = {
        "2008_000001": [("motorbike", 0, (30, 30, 90, 90)), ("bird", 0, (100, 30, 160, 90))],
        "2008_000002": [("bus", 0, (30, 30, 90, 90)), ("cow", 0, (100, 30, 160, 90)),
                        ("sofa", 0, (20, 95, 80, 135)), ("motorbike", 0, (100, 95, 160, 135))],
    }
    test07 = test_objects or {
        "000010": [("bird", 0, (11, 21, 60, 80)), ("bird", 1, (100, 30, 150, 90)),
                   ("dog", 0, (150, 100, 190, 140))],
        "000011": [("bus", 0, (30, 30, 90, 90))],
    }
    for year, sets in (("2007", {"trainval": trainval07, "test": test07}),
                       ("2012", {"trainval": trainval12})):
        base = os.path.join(root, "VOC" + year)
        os.makedirs(os.path.join(base, "ImageSets", "Main"), exist_ok=True)
        for split, entries in sets.items():
            with open(os.path.join(base, "ImageSets", "Main", split + ".txt"), "w") as f:
                f.write("\n".join(entries) + "\n")
            for seed, (file_id, objects) in enumerate(entries.items()):
                _voc_xml(os.path.join(base, "Annotations", file_id + ".xml"), 200, 150, objects)
                if images:
                    jpg = os.path.join(base, "JPEGImages", file_id + ".jpg")
                    _write_png(jpg, seed, size=(200, 150))


def make_cdfsod_tree(root, key, names=None):
    """``<root>/<Folder>/annotations/{1,5,10}_shot.json, test.json`` with the class list."""
    folder, classes = CDFSOD_DATASETS[key]
    cats = [{"id": i + 1, "name": n} for i, n in enumerate(names or classes)]
    ann_dir = os.path.join(root, folder, "annotations")
    os.makedirs(ann_dir, exist_ok=True)
    for file_name in ("1_shot.json", "5_shot.json", "10_shot.json", "test.json"):
        data = {
            "images": [{"id": 1, "file_name": "a.jpg", "width": 50, "height": 40}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [5, 5, 20, 20],
                             "area": 400, "iscrowd": 0}],
            "categories": cats,
        }
        with open(os.path.join(ann_dir, file_name), "w") as f:
            json.dump(data, f)
    return os.path.join(root, folder)


@pytest.fixture
def root(tmp_path, monkeypatch):
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path))
    register_under(tmp_path)
    return tmp_path


def run_auditing_opens(root, code, args):
    """
    Run ``code`` in a fresh Python under ``DETECTRON2_DATASETS=root`` after ``import refseg_d2,
    refseg_d2.data.datasets``, with ``args`` as ``sys.argv[1:]``. Returns its stdout, which
    ends with ``OPENED [...]``: the files under ``root`` that the import or ``code`` opened.
    """
    script = (
        "import sys, os\n"
        "root = os.environ['DETECTRON2_DATASETS']\n"
        "opened = []\n"
        "sys.addaudithook(lambda ev, a: opened.append(str(a[0])) if ev == 'open' and "
        "str(a[0]).startswith(root) else None)\n"
        "import refseg_d2, refseg_d2.data.datasets\n"
        "from detectron2.data import DatasetCatalog\n"
        + code +
        "print('OPENED', opened)\n"
    )
    env = dict(os.environ, DETECTRON2_DATASETS=str(root))
    out = subprocess.run([sys.executable, "-c", script] + list(args), cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def test_importing_the_package_registers_the_paper_seeds_only_and_opens_no_dataset_file(
        tmp_path):
    make_coco_tree(str(tmp_path))
    make_voc_tree(str(tmp_path))
    code = (
        "names = set(DatasetCatalog.list())\n"
        "print('OURS', len([n for n in names if n.startswith({!r})]))\n"
        "print('WANTED', all(n in names for n in sys.argv[1:]))\n"
        "print('SEED7', 'coco_fsod_train_novel_30shot_seed7' in names)\n"
        "from refseg_d2.data.datasets import register_reference_dataset\n"
        "register_reference_dataset('coco_fsod_train_novel_30shot_seed7')\n"
        "print('SEED7_BY_NAME', 'coco_fsod_train_novel_30shot_seed7' in DatasetCatalog.list())\n"
    ).format(PREFIXES)
    wanted = ["coco_fsod_val_novel", "coco_fsod_train_novel_30shot_seed33",
              "coco_fsod_train_novel_1shot_seed99", "voc_2007_test_novel3",
              "voc_fewshot_split2_trainval_novel_5shot_seed33", "voc_tfa_split1_novel_10shot_seed9",
              "voc_tfa_split3_novel_1shot_seed0", "cdfsod_deepfish_10shot",
              "cdfsod_uodd_test_with_segm", "coco20i_split4_train_5shot_seed42",
              "coco20i_split1_val"]
    out = run_auditing_opens(tmp_path, code, wanted)
    # COCO-FSOD 1 + 6 shots x 10 seeds; VOC 2 + 3 splits x (2 + 5 shots x (1 + 10 TFA seeds));
    # CD-FSOD 6 x 2 (with_segm or not) x (3 shots x 2 + 2); COCO-20i 4 x (1 + 2 shots);
    # FsDet COCO seed files 2 splits x 6 shots x 10 seeds; gFSOD 1 + 6 shots x 10 seeds; LVIS
    # 5 shots x 1 seed (lvis_v1_val is Detectron2's name); FSOD-VFM's support files: COCO 2 shots,
    # VOC 3 splits x 5 shots, CD-FSOD 6 x 3 shots.
    assert "OURS {}\n".format(61 + 173 + 96 + 12 + 120 + 61 + 5 + 2 + 15 + 18) in out
    assert "WANTED True" in out
    assert "SEED7 False" in out and "SEED7_BY_NAME True" in out
    assert "OPENED []" in out
    assert not os.path.exists(os.path.join(str(tmp_path), "refseg_cache"))


def _write_tfa_files(root, seed, shots, images_per_class):
    """
    TFA seed files (``vocsplit/`` for seed 0, ``vocsplit/seed{S}/`` otherwise): per class
    ``box_{shots}shot_{class}_train.txt`` listing its images ({class: [VOC file id]}) as
    FsDet's image paths.
    """
    base = os.path.join(str(root), "vocsplit")
    folder = os.path.join(base, "seed{}".format(seed)) if seed else base
    os.makedirs(folder, exist_ok=True)
    for name, ids in images_per_class.items():
        path = os.path.join(folder, "box_{}shot_{}_train.txt".format(shots, name))
        with open(path, "w") as f:
            f.write("".join("datasets/VOC{}/JPEGImages/{}.jpg\n".format(
                "2012" if "_" in i else "2007", i) for i in ids))


def test_resolve_datasets_registers_any_seed_without_opening_a_file_and_the_sets_load(root):
    make_coco_tree(str(root), per_class=7)
    make_voc_tree(str(root))
    tfa = {"bird": ["000001", "000004", "2008_000001"], "bus": ["000002", "000004", "2008_000002"],
           "cow": ["000002", "000005", "2008_000002"],
           "motorbike": ["000003", "2008_000001", "2008_000002"],
           "sofa": ["000003", "000005", "2008_000002"]}
    _write_tfa_files(root, 29, 10, tfa)
    names = ["voc_tfa_split1_novel_10shot_seed29", "coco_fsod_train_novel_7shot_seed1234",
             "my_own_dataset", "coco_fsod_val_novel"]
    code = (
        "from refseg_d2.data.datasets import resolve_datasets\n"
        "print('RETURNED', resolve_datasets(sys.argv[1:]) == sys.argv[1:])\n"
        "print('REGISTERED', [n in DatasetCatalog.list() for n in sys.argv[1:]])\n"
    )
    out = run_auditing_opens(root, code, names)
    assert "RETURNED True" in out and "REGISTERED [True, True, False, True]" in out
    assert "OPENED []" in out

    assert "voc_tfa_split1_novel_10shot_seed29" not in DatasetCatalog.list()
    assert resolve_datasets(iter(names)) == names
    assert "my_own_dataset" not in DatasetCatalog.list()
    # TFA: every object of the class in the listed images (10 shots > what they hold): the
    # two birds of 000001 (one difficult), one in 000004 and 2008_000001; 3 of each other class.
    tfa_dicts = DatasetCatalog.get("voc_tfa_split1_novel_10shot_seed29")
    labels = sorted(a["category_id"] for d in tfa_dicts for a in d["annotations"])
    assert labels == [0] * 4 + [1] * 3 + [2] * 3 + [3] * 3 + [4] * 3
    assert len(tfa_dicts) == 7    # 000001-000005, 2008_000001, 2008_000002
    meta = MetadataCatalog.get("voc_tfa_split1_novel_10shot_seed29")
    assert (meta.shots, meta.seed, meta.reference_of) == (10, 29, "voc_2007_test_novel1")
    # COCO-FSOD: 7 of the 7 images of each class, its valid (40 px) annotation only.
    coco_dicts = DatasetCatalog.get("coco_fsod_train_novel_7shot_seed1234")
    assert len(coco_dicts) == 140
    assert all([a["bbox"][2] for a in d["annotations"]] == [40] for d in coco_dicts)
    assert MetadataCatalog.get("coco_fsod_train_novel_7shot_seed1234").seed == 1234


def test_names_registered_on_demand_live_under_the_root_of_the_other_benchmarks(
        tmp_path, monkeypatch):
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path / "elsewhere"))
    register_under(tmp_path / "data")
    name = register_reference_dataset("coco_fsod_train_novel_7shot_seed1234")
    coco = os.path.join(str(tmp_path), "data", "coco")
    assert MetadataCatalog.get(name).image_root == os.path.join(coco, "train2017")
    assert MetadataCatalog.get("coco_fsod_val_novel").image_root == os.path.join(coco, "val2017")


def test_coco_fsod_test_set_keeps_every_image_with_novel_ground_truth_only(root):
    make_coco_tree(str(root))
    dicts = DatasetCatalog.get("coco_fsod_val_novel")
    assert [d["image_id"] for d in dicts] == [1, 2, 3, 4]   # image 4 has no novel object
    meta = MetadataCatalog.get("coco_fsod_val_novel")
    labels = [a["category_id"] for d in dicts for a in d["annotations"]]
    assert sorted(labels) == [0, 0, 1, 2]    # contiguous: person(1)=0 twice (one crowd), ...
    assert len(meta.thing_classes) == 20 and meta.thing_classes[0] == "person"
    with open(meta.json_file) as f:
        gt = json.load(f)
    assert [c["id"] for c in gt["categories"]] == sorted(NOVEL_IDS)
    assert len(gt["images"]) == 4 and BASE_ID not in {a["category_id"] for a in gt["annotations"]}
    assert prepare_ground_truth("coco_fsod_val_novel") == meta.json_file


def test_derived_files_are_reused_and_rebuilt_when_the_source_changes(root):
    _, val = make_coco_tree(str(root))
    path = prepare_ground_truth("coco_fsod_val_novel")
    stamp = os.stat(path).st_mtime_ns
    assert prepare_ground_truth("coco_fsod_val_novel") == path
    assert os.stat(path).st_mtime_ns == stamp
    val["annotations"] = [a for a in val["annotations"] if a["image_id"] != 2]
    src = os.path.join(str(root), "coco", "annotations", "instances_val2017.json")
    with open(src, "w") as f:
        json.dump(val, f)
    os.utime(src, ns=(stamp + 10**9, stamp + 10**9))
    dicts = DatasetCatalog.get("coco_fsod_val_novel")
    assert [len(d["annotations"]) for d in dicts] == [2, 0, 1, 0]


def test_coco_fsod_references_follow_shots_and_seed(root):
    make_coco_tree(str(root), per_class=3)
    a = DatasetCatalog.get("coco_fsod_train_novel_2shot_seed33")
    assert a == DatasetCatalog.get("coco_fsod_train_novel_2shot_seed33")
    per_class = {}
    for d in a:
        assert len(d["annotations"]) == 1
        ann = d["annotations"][0]
        assert ann["bbox"][2] == 40            # never the invalid (small) annotation
        per_class.setdefault(ann["category_id"], []).append(d["image_id"])
    assert sorted(per_class) == list(range(20)) and all(len(v) == 2 for v in per_class.values())
    b = DatasetCatalog.get(register_reference_dataset("coco_fsod_train_novel_2shot_seed34"))
    assert {d["image_id"] for d in a} != {d["image_id"] for d in b}
    meta = MetadataCatalog.get("coco_fsod_train_novel_2shot_seed33")
    assert (meta.shots, meta.seed) == (2, 33)
    assert meta.thing_classes == MetadataCatalog.get("coco_fsod_val_novel").thing_classes
    with pytest.raises(ValueError, match="only 3 valid annotations"):
        DatasetCatalog.get("coco_fsod_train_novel_5shot_seed33")
    # any seed and shot count, by name
    name = register_reference_dataset("coco_fsod_train_novel_3shot_seed1234")
    assert len(DatasetCatalog.get(name)) == 60 and MetadataCatalog.get(name).seed == 1234
    with pytest.raises(ValueError, match="not the name of a sampled reference set"):
        register_reference_dataset("cdfsod_dior_7shot")
    with pytest.raises(ValueError, match="'coco_fsod_train_novel_3shot_seed07' is not the name"):
        register_reference_dataset("coco_fsod_train_novel_3shot_seed07")   # would be seed7


def test_missing_files_are_errors_naming_the_expected_path(root):
    expected = os.path.join(str(root), "coco", "annotations", "instances_val2017.json")
    with pytest.raises(FileNotFoundError, match=expected):
        DatasetCatalog.get("coco_fsod_val_novel")
    with pytest.raises(FileNotFoundError, match="VOC2007.*trainval.txt"):
        DatasetCatalog.get("voc_fewshot_split1_trainval_novel_1shot_seed33")
    with pytest.raises(FileNotFoundError, match="ArTaxOr.*test.json"):
        DatasetCatalog.get("cdfsod_artaxor_test")


def test_voc_conversion_follows_the_authors_order_and_boxes(root):
    make_voc_tree(str(root))
    dicts = DatasetCatalog.get("voc_0712_trainval_all")
    assert [d["file_name"][len(str(root)) + 1:] for d in dicts[:1] + dicts[-1:]] == [
        "VOC2007/JPEGImages/000001.jpg", "VOC2012/JPEGImages/2008_000002.jpg"]
    first = dicts[0]["annotations"]
    # non-difficult objects first (person, bird), the difficult bird last, as iscrowd
    assert [(a["category_id"], a["iscrowd"]) for a in first] == [(14, 0), (2, 0), (2, 1)]
    assert first[1]["bbox"] == [99, 49, 60, 60]       # [xmin - 1, ymin - 1, xmax - xmin, ...]
    with open(MetadataCatalog.get("voc_0712_trainval_all").json_file) as f:
        data = json.load(f)
    assert [a["id"] for a in data["annotations"]][:3] == [1, 2, 3]


def test_voc_test_set_and_references_use_the_novel_classes_only(root):
    make_voc_tree(str(root))
    meta = MetadataCatalog.get("voc_2007_test_novel1")
    assert meta.thing_classes == ["bird", "bus", "cow", "motorbike", "sofa"]
    voc07 = os.path.join(str(root), "VOC2007")
    assert (meta.year, meta.split, meta.dirname) == (2007, "test", voc07)
    test = DatasetCatalog.get("voc_2007_test_novel1")
    assert [[(a["category_id"], a["iscrowd"]) for a in d["annotations"]] for d in test] == [
        [(0, 0), (0, 1)], [(1, 0)]]                      # the dog is gone, difficult ignored
    refs = DatasetCatalog.get("voc_fewshot_split1_trainval_novel_3shot_seed33")
    anns = [a for d in refs for a in d["annotations"]]
    assert sorted(a["category_id"] for a in anns) == sorted(list(range(5)) * 3)
    assert not any(a["iscrowd"] for a in anns) and not any("segmentation" in a for a in anns)
    with pytest.raises(ValueError, match="only 3 valid"):
        DatasetCatalog.get("voc_fewshot_split1_trainval_novel_5shot_seed33")


def test_tfa_seed_files_are_an_alternative_reference_set(root):
    make_voc_tree(str(root))
    for seed in (0, 3):
        _write_tfa_files(root, seed, 1, {"bird": ["000001"], "bus": ["000002"],
                                         "cow": ["2008_000002"], "motorbike": ["000003"],
                                         "sofa": ["000005"]})
    dicts = DatasetCatalog.get("voc_tfa_split1_novel_1shot_seed0")
    anns = {os.path.basename(d["file_name"]): [a["category_id"] for a in d["annotations"]]
            for d in dicts}
    # 000001 has two birds (one difficult): one of them is kept, seeded
    assert anns == {"000001.jpg": [0], "000002.jpg": [1], "2008_000002.jpg": [2],
                    "000003.jpg": [3], "000005.jpg": [4]}
    assert DatasetCatalog.get("voc_tfa_split1_novel_1shot_seed0") == dicts
    assert len(DatasetCatalog.get("voc_tfa_split1_novel_1shot_seed3")) == 5
    with pytest.raises(FileNotFoundError, match="box_2shot_bird_train.txt"):
        DatasetCatalog.get("voc_tfa_split1_novel_2shot_seed0")


def test_cdfsod_release_layout_class_lists_and_with_segm_names(root):
    base = make_cdfsod_tree(str(root), "uodd")
    dicts = DatasetCatalog.get("cdfsod_uodd_5shot")
    assert dicts[0]["file_name"] == os.path.join(base, "train", "a.jpg")
    classes = MetadataCatalog.get("cdfsod_uodd_5shot").thing_classes
    assert classes == ["seacucumber", "seaurchin", "scallop"]
    test = DatasetCatalog.get("cdfsod_uodd_test")
    assert test[0]["file_name"] == os.path.join(base, "test", "a.jpg")
    assert MetadataCatalog.get("cdfsod_uodd_test").evaluator_type == "fewshot_coco"
    with pytest.raises(FileNotFoundError, match="test_with_segm.json"):
        DatasetCatalog.get("cdfsod_uodd_test_with_segm")
    make_cdfsod_tree(str(root), "neudet", names=["crazing", "inclusion"])
    with pytest.raises(ValueError, match="CD-FSOD NEU-DET has"):
        DatasetCatalog.get("cdfsod_neudet_1shot")


def test_coco20i_splits_and_restricted_ground_truth(root):
    splits = [split_category_ids(s) for s in (1, 2, 3, 4)]
    assert sorted(sum(splits, [])) == sorted(COCO_THING_CLASSES)
    assert all(len(s) == 20 for s in splits)
    assert [COCO_THING_CLASSES[i] for i in splits[0][:3]] == ["person", "airplane", "boat"]
    assert [COCO_THING_CLASSES[i] for i in splits[3][:2]] == ["motorcycle", "truck"]
    make_coco_tree(str(root))
    dicts = DatasetCatalog.get("coco20i_split4_val")   # truck (8) is in split 4
    meta = MetadataCatalog.get("coco20i_split4_val")
    assert meta.evaluator_type == ["fewshot_coco", "semseg_from_instances"]
    truck = meta.thing_dataset_id_to_contiguous_id[BASE_ID]
    assert (truck, meta.thing_classes[truck]) == (1, "truck")   # split 4: motorcycle, truck, ...
    assert [[a["category_id"] for a in d["annotations"]] for d in dicts] == [[truck]] * 4


def _write_cdfsod_file(base, file_name, images, annotations, classes):
    data = {
        "images": [{"id": i, "file_name": "{}.jpg".format(i), "width": 50, "height": 40}
                   for i in images],
        "annotations": [{"id": a, "image_id": img, "category_id": cat, "bbox": [5, 5, 20, 20],
                         "area": 400, "iscrowd": 0} for a, img, cat in annotations],
        "categories": [{"id": i + 1, "name": n} for i, n in enumerate(classes)],
    }
    with open(os.path.join(base, "annotations", file_name), "w") as f:
        json.dump(data, f)


def test_cdfsod_references_copy_the_first_annotation_and_pad_like_the_authors(root):
    classes = CDFSOD_DATASETS["uodd"][1]
    base = make_cdfsod_tree(str(root), "uodd")
    # (annotation id, image id, category id); seaurchin (2) is seen first.
    anns = [(7, 1, 2), (3, 1, 1), (5, 1, 1), (4, 2, 1), (8, 3, 3), (9, 4, 3), (10, 5, 3)]
    _write_cdfsod_file(base, "2_shot.json", [1, 2, 3, 4, 5], anns, classes)
    with open(os.path.join(base, "annotations", "2_shot.json")) as f:
        data = json.load(f)
    # One stream, random.Random(42).random() = 0.639, 0.025, 0.275, 0.223, 0.736, 0.677, 0.892,
    # 0.087; random.choices takes entries[floor(u * n)].
    # seaurchin (seen first): [7], padded with 4 draws of [7].
    # seacucumber: image 1 has 3 and 5 -> two copies of 3, then 4: [3, 3, 4]; draws 0.736 and
    # 0.677 -> index 2, 2 -> 4, 4.  scallop: [8, 9, 10]; 0.892, 0.087 -> index 2, 0 -> 10, 8.
    ids = authors_reference_ids(data, shots=5)
    random.seed(42)   # what coco_to_pkl.py does at import
    expected_urchin = [7] + random.choices([7], k=4)
    expected_cucumber = [3, 3, 4] + random.choices([3, 3, 4], k=2)
    expected_scallop = [8, 9, 10] + random.choices([8, 9, 10], k=2)
    assert list(ids) == [2, 1, 3]
    assert ids[2] == expected_urchin == [7, 7, 7, 7, 7]
    assert ids[1] == expected_cucumber == [3, 3, 4, 4, 4]
    assert ids[3] == expected_scallop == [8, 9, 10, 10, 8]
    # more annotations than shots: kept whole
    assert authors_reference_ids(data, shots=1)[1] == [3, 3, 4]


def test_cdfsod_reference_and_test_variants(root):
    classes = CDFSOD_DATASETS["uodd"][1]
    base = make_cdfsod_tree(str(root), "uodd")
    anns = [(7, 1, 2), (3, 1, 1), (5, 1, 1), (8, 2, 3)]
    _write_cdfsod_file(base, "1_shot.json", [1, 2], anns, classes)
    _write_cdfsod_file(base, "test.json", [1, 2, 3], [(1, 1, 1), (2, 2, 3)], classes)

    def shots(name):
        return sorted((d["image_id"], a["bbox"][0], a["category_id"])
                      for d in DatasetCatalog.get(name) for a in d["annotations"])

    authors = DatasetCatalog.get("cdfsod_uodd_1shot")
    per_image = {d["image_id"]: [a.get("id") for a in d["annotations"]] for d in authors}
    assert per_image == {1: [7, 3, 3], 2: [8]}   # the first seacucumber of image 1, twice
    assert len(shots("cdfsod_uodd_1shot_all_instances")) == 4
    everything = DatasetCatalog.get("cdfsod_uodd_1shot_all_instances")
    assert sorted(a["category_id"] for d in everything for a in d["annotations"]) == [0, 0, 1, 2]

    # the authors' test set has no image without annotations; _all_images has the release's
    assert [d["image_id"] for d in DatasetCatalog.get("cdfsod_uodd_test")] == [1, 2]
    assert [d["image_id"] for d in DatasetCatalog.get("cdfsod_uodd_test_all_images")] == [1, 2, 3]
    gt = prepare_ground_truth("cdfsod_uodd_test")
    with open(gt) as f:
        assert [img["id"] for img in json.load(f)["images"]] == [1, 2]
    assert prepare_ground_truth("cdfsod_uodd_test_all_images") == os.path.join(
        base, "annotations", "test.json")
