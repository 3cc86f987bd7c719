"""
The protocols of the fine-tuned few-shot baselines on tiny synthetic files with the real
layouts: FsDet COCO seed files (``coco_tfa_*``), generalized few-shot COCO (bAP / nAP,
``coco_gfsod_val_all``) and LVIS v1 (the authors' LVIS sampling rules, Detectron2's
LVISEvaluator on ``lvis_v1_val``).
"""
import json
import os
import sys
from collections import Counter

import numpy as np
import pytest
import torch
from common import REPO, TINY_CONFIG
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import Boxes, Instances
from test_benchmark_datasets import (
    BASE_ID, _write_png, make_coco_tree, register_under, run_auditing_opens,
)

from refseg_d2 import add_refseg_config
from refseg_d2.data.datasets import register_reference_dataset, sample_references
from refseg_d2.data.datasets.coco_fsod import COCO_THING_CLASSES, NOVEL_IDS
from refseg_d2.data.datasets.lvis import LVIS_V1_CLASSES
from refseg_d2.evaluation import build_evaluator

LVIS_FREQUENCY = {}


def _lvis_frequency():
    """{id: 'r' / 'c' / 'f'} of the LVIS v1 categories."""
    if not LVIS_FREQUENCY:
        from detectron2.data.datasets.lvis_v1_categories import LVIS_CATEGORIES

        LVIS_FREQUENCY.update((c["id"], c["frequency"]) for c in LVIS_CATEGORIES)
    return LVIS_FREQUENCY


def _square(x, y, s):
    return [[x, y, x + s, y, x + s, y + s, x, y + s]]


def _ann(ann_id, image_id, cat, x, y, s, **extra):
    return dict({"id": ann_id, "image_id": image_id, "category_id": cat, "bbox": [x, y, s, s],
                 "area": s * s, "iscrowd": 0, "segmentation": _square(x, y, s)}, **extra)


def fsdet_image_id(seed, cat, k):
    return 100000 * (seed + 1) + 100 * cat + k


def write_fsdet_files(root, seed, shots, category_ids, images_per_class, extra_for=(),
                      images=False):
    """
    FsDet COCO seed files (``cocosplit/`` for seed 0, ``cocosplit/seed{S}/`` otherwise), one
    ``full_box_{shots}shot_{class}_trainval.json`` per class: ``images_per_class`` 64 x 64
    images (id :func:`fsdet_image_id`; even k in train2014, odd k in val2014), each with one
    40 px annotation of the class; the classes of ``extra_for`` have a second one in their
    first image. With ``images``, the image files are written under ``coco/{train,val}2014``.
    """
    folder = os.path.join(str(root), "cocosplit")
    folder = os.path.join(folder, "seed{}".format(seed)) if seed else folder
    os.makedirs(folder, exist_ok=True)
    cats = [{"id": i, "name": n, "supercategory": "x"} for i, n in COCO_THING_CLASSES.items()]
    for cat in category_ids:
        data = {"images": [], "annotations": [], "categories": cats}
        for k in range(images_per_class):
            image_id = fsdet_image_id(seed, cat, k)
            split = "train2014" if k % 2 == 0 else "val2014"
            file_name = "COCO_{}_{:012d}.jpg".format(split, image_id)
            data["images"].append({"id": image_id, "file_name": file_name, "width": 64,
                                   "height": 64})
            data["annotations"].append(_ann(10 * image_id, image_id, cat, 12, 12, 40))
            if k == 0 and cat in extra_for:
                data["annotations"].append(_ann(10 * image_id + 1, image_id, cat, 2, 2, 20))
            if images:
                _write_png(os.path.join(str(root), "coco", split, file_name), image_id)
        path = os.path.join(folder, "full_box_{}shot_{}_trainval.json".format(
            shots, COCO_THING_CLASSES[cat]))
        with open(path, "w") as f:
            json.dump(data, f)


@pytest.fixture
def root(tmp_path, monkeypatch):
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path))
    register_under(tmp_path)
    return tmp_path


def test_import_registers_fsdet_gfsod_and_lvis_names_and_others_on_demand_without_reading(
        tmp_path):
    code = (
        "names = set(DatasetCatalog.list())\n"
        "print('WANTED', [n in names for n in sys.argv[1:]])\n"
        "from refseg_d2.data.datasets import resolve_datasets\n"
        "later = ['coco_fsod_train_all_7shot_seed1234', 'lvis_v1_train_4shot_seed3']\n"
        "print('LATER_BEFORE', [n in names for n in later])\n"
        "resolve_datasets(later)\n"
        "print('LATER_AFTER', [n in DatasetCatalog.list() for n in later])\n"
    )
    wanted = ["coco_tfa_novel_30shot_seed9", "coco_tfa_all_1shot_seed0", "coco_gfsod_val_all",
              "coco_fsod_train_all_10shot_seed33", "coco_fsod_train_all_1shot_seed99",
              "lvis_v1_train_10shot_seed42", "lvis_v1_train_1shot_seed42", "lvis_v1_val"]
    out = run_auditing_opens(tmp_path, code, wanted)
    assert "WANTED {}".format([True] * len(wanted)) in out
    assert "LATER_BEFORE [False, False]" in out and "LATER_AFTER [True, True]" in out
    assert "OPENED []" in out


def test_fsdet_seed_zero_is_the_cocosplit_folder_and_other_seeds_their_subfolder(root):
    for seed in (0, 3):
        write_fsdet_files(root, seed, 2, NOVEL_IDS, images_per_class=2)
    for seed in (0, 3):
        dicts = DatasetCatalog.get("coco_tfa_novel_2shot_seed{}".format(seed))
        expected = sorted(fsdet_image_id(seed, c, k) for c in NOVEL_IDS for k in range(2))
        assert sorted(d["image_id"] for d in dicts) == expected
    meta = MetadataCatalog.get("coco_tfa_novel_2shot_seed3")
    assert (meta.shots, meta.seed, meta.reference_of) == (2, 3, "coco_fsod_val_novel")
    assert meta.thing_classes == MetadataCatalog.get("coco_fsod_val_novel").thing_classes


def test_fsdet_images_resolve_to_train2014_val2014_or_the_merged_trainval2014(root):
    write_fsdet_files(root, 0, 2, NOVEL_IDS, images_per_class=2)
    coco = os.path.join(str(root), "coco")
    person = [d for d in DatasetCatalog.get("coco_tfa_novel_2shot_seed0")
              if d["image_id"] in (fsdet_image_id(0, 1, 0), fsdet_image_id(0, 1, 1))]
    train_name = "COCO_train2014_{:012d}.jpg".format(fsdet_image_id(0, 1, 0))
    val_name = "COCO_val2014_{:012d}.jpg".format(fsdet_image_id(0, 1, 1))
    assert sorted(d["file_name"] for d in person) == [
        os.path.join(coco, "train2014", train_name), os.path.join(coco, "val2014", val_name)]
    os.makedirs(os.path.join(coco, "trainval2014"))
    merged = DatasetCatalog.get("coco_tfa_novel_2shot_seed0")
    assert {os.path.dirname(d["file_name"]) for d in merged} == {os.path.join(coco, "trainval2014")}


def test_fsdet_class_files_give_one_reference_per_annotation_and_keep_k_of_more(root):
    # person's file holds 3 annotations at 2 shots (FsDet keeps 2); the others exactly 2.
    write_fsdet_files(root, 0, 2, NOVEL_IDS, images_per_class=2, extra_for=(1,))
    dicts = DatasetCatalog.get("coco_tfa_novel_2shot_seed0")
    labels = Counter(a["category_id"] for d in dicts for a in d["annotations"])
    assert labels == Counter({c: 2 for c in range(20)})
    def person(dicts):
        return {(d["image_id"], a["bbox"][2]) for d in dicts for a in d["annotations"]
                if a["category_id"] == 0}

    first, second = fsdet_image_id(0, 1, 0), fsdet_image_id(0, 1, 1)
    assert len(person(dicts)) == 2 and person(dicts) < {(first, 40), (first, 20), (second, 40)}
    assert all("segmentation" in a for d in dicts for a in d["annotations"])
    assert person(DatasetCatalog.get("coco_tfa_novel_2shot_seed0")) == person(dicts)


def test_fsdet_seeds_and_shots_outside_the_release_are_errors_naming_the_valid_ones(root):
    with pytest.raises(ValueError, match=r"seeds 0-9 only, got 10 shots and seed 10"):
        register_reference_dataset("coco_tfa_novel_10shot_seed10")
    with pytest.raises(ValueError, match=r"shots \[1, 2, 3, 5, 10, 30\]"):
        register_reference_dataset("coco_tfa_all_4shot_seed0")


def test_a_missing_fsdet_file_is_an_error_naming_its_expected_path(root):
    write_fsdet_files(root, 0, 5, NOVEL_IDS[:19], images_per_class=5)
    missing = os.path.join(str(root), "cocosplit", "full_box_5shot_tv_trainval.json")
    with pytest.raises(FileNotFoundError, match=missing):
        DatasetCatalog.get("coco_tfa_novel_5shot_seed0")


def _write_all_class_train2017(root):
    """instances_train2017.json with one 64 x 64 image per COCO class, one valid 40 px object."""
    cats = [{"id": i, "name": n, "supercategory": "x"} for i, n in COCO_THING_CLASSES.items()]
    data = {"images": [], "annotations": [], "categories": cats}
    for cat in COCO_THING_CLASSES:
        data["images"].append({"id": cat, "file_name": "{}.png".format(cat), "width": 64,
                               "height": 64})
        data["annotations"].append(_ann(cat, cat, cat, 12, 12, 40))
    with open(os.path.join(str(root), "coco", "annotations", "instances_train2017.json"), "w") as f:
        json.dump(data, f)


def test_gfsod_test_set_and_sampled_references_cover_the_80_classes(root):
    make_coco_tree(str(root))
    _write_all_class_train2017(root)
    meta = MetadataCatalog.get("coco_gfsod_val_all")
    assert len(meta.thing_classes) == 80 and meta.evaluator_type == "gfsod_coco"
    assert sorted(meta.base_category_ids + meta.novel_category_ids) == sorted(COCO_THING_CLASSES)
    assert sorted(meta.novel_category_ids) == sorted(NOVEL_IDS)
    test = DatasetCatalog.get("coco_gfsod_val_all")
    truck = meta.thing_dataset_id_to_contiguous_id[BASE_ID]
    assert sum(a["category_id"] == truck for d in test for a in d["annotations"]) == 4
    refs = DatasetCatalog.get(register_reference_dataset("coco_fsod_train_all_1shot_seed5"))
    assert sorted(a["category_id"] for d in refs for a in d["annotations"]) == list(range(80))
    ref_meta = MetadataCatalog.get("coco_fsod_train_all_1shot_seed5")
    assert ref_meta.reference_of == "coco_gfsod_val_all"
    assert ref_meta.thing_classes == meta.thing_classes


def _cfg(opts=()):
    cfg = get_cfg()
    add_refseg_config(cfg)
    cfg.merge_from_file(TINY_CONFIG)
    cfg.merge_from_list(list(opts))
    return cfg


def _perfect_predictions(dicts, keep):
    """(inputs, outputs): per image, its ground truth of contiguous classes ``keep`` as
    predictions (boxes and masks exactly the 40/30/20 px squares, score 0.9)."""
    inputs, outputs = [], []
    for d in dicts:
        anns = [a for a in d["annotations"]
                if a["category_id"] in keep and not a.get("iscrowd", 0)]
        inst = Instances((d["height"], d["width"]))
        boxes = [[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2],
                  a["bbox"][1] + a["bbox"][3]] for a in anns]
        masks = torch.zeros((len(anns), d["height"], d["width"]), dtype=torch.bool)
        for m, (x0, y0, x1, y1) in zip(masks, boxes):
            m[int(y0):int(y1), int(x0):int(x1)] = True
        inst.pred_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
        inst.scores = torch.full((len(anns),), 0.9)
        inst.pred_classes = torch.tensor([a["category_id"] for a in anns], dtype=torch.int64)
        inst.pred_masks = masks
        inputs.append({"image_id": d["image_id"], "height": d["height"], "width": d["width"]})
        outputs.append({"instances": inst})
    return inputs, outputs


@pytest.mark.parametrize("part,expected", [
    # val2017 of make_coco_tree: ground truth of truck (base) in 4 images, person, bicycle and
    # car (novel) in one image each, and one crowd person. AP averages the 4 classes with
    # ground truth: perfect base predictions give (100 + 0 + 0 + 0) / 4.
    ("base", {"AP": 25.0, "bAP": 100.0, "nAP": 0.0}),
    ("novel", {"AP": 75.0, "bAP": 0.0, "nAP": 100.0}),
])
def test_gfsod_evaluator_reports_all_base_and_novel_ap(root, tmp_path, part, expected):
    make_coco_tree(str(root))
    dicts = DatasetCatalog.get("coco_gfsod_val_all")
    id_map = MetadataCatalog.get("coco_gfsod_val_all").thing_dataset_id_to_contiguous_id
    ids = [BASE_ID] if part == "base" else NOVEL_IDS
    evaluator = build_evaluator(_cfg(), "coco_gfsod_val_all", str(tmp_path / "eval"))
    evaluator.reset()
    evaluator.process(*_perfect_predictions(dicts, {id_map[i] for i in ids}))
    results = evaluator.evaluate()
    for task in ("bbox", "segm"):
        for key, value in expected.items():
            assert results[task][key] == pytest.approx(value, abs=1e-6), (task, key)
        assert results[task]["AP-truck"] == pytest.approx(expected["bAP"], abs=1e-6)
        assert len([k for k in results[task] if k.startswith("AP-")]) == 80
        assert {"bAP50", "bAP75", "nAP50", "nAP75", "nAPs"} <= set(results[task])


def test_gfsod_evaluator_needs_the_base_and_novel_ids_in_the_metadata(root, tmp_path):
    from refseg_d2.data.ground_truth import prepare_ground_truth
    from refseg_d2.evaluation import GFSODCOCOEvaluator

    make_coco_tree(str(root))

    prepare_ground_truth("coco_fsod_val_novel")
    message = "'coco_fsod_val_novel' has no metadata 'base_category_ids'"
    with pytest.raises(ValueError, match=message):
        GFSODCOCOEvaluator("coco_fsod_val_novel", output_dir=str(tmp_path))


def make_lvis_tree(root):
    """
    ``<root>/lvis/lvis_v1_{train,val}.json`` (LVIS format, the 1203 categories).

    train: image 1 (100 x 100) holds one valid 40 px annotation of every category from id 4 on;
    category 1 also has valid ones in images 2 and 3, category 2 only one valid (image 2),
    category 3 only invalid ones (two 10 px in image 2, one in image 3). The images' coco_url
    put them in train2017.

    val: images 11 (val2017), 12 and 13 (train2017), 100 x 100: a rare, a common and a
    frequent class (ids in the returned dict) with one 25 px object each in image 11, the rare
    class again in image 12; image 12 lists the frequent class as negative, image 13 has no
    annotation and no negative class.
    """
    freq = _lvis_frequency()
    cats = [{"id": i, "name": n, "frequency": freq[i], "synonyms": [n]}
            for i, n in LVIS_V1_CLASSES.items()]

    def image(image_id, split):
        return {"id": image_id, "width": 100, "height": 100, "neg_category_ids": [],
                "not_exhaustive_category_ids": [],
                "coco_url": "http://images.cocodataset.org/{}/{:012d}.jpg".format(split, image_id)}

    train = {"images": [image(i, "train2017") for i in (1, 2, 3)], "annotations": [],
             "categories": cats}

    def add(data, image_id, cat, x, y, s):
        data["annotations"].append(_ann(len(data["annotations"]) + 1, image_id, cat, x, y, s))

    for cat in LVIS_V1_CLASSES:
        if cat >= 4:
            add(train, 1, cat, 20, 20, 40)
    add(train, 2, 1, 20, 20, 40)
    add(train, 3, 1, 20, 20, 40)
    add(train, 1, 1, 20, 20, 40)
    add(train, 2, 2, 20, 20, 40)
    add(train, 2, 3, 20, 20, 10)
    add(train, 2, 3, 50, 50, 10)
    add(train, 3, 3, 20, 20, 10)
    classes = {f: next(i for i in sorted(freq) if freq[i] == f) for f in ("r", "c", "f")}
    val = {"images": [image(11, "val2017"), image(12, "train2017"), image(13, "train2017")],
           "annotations": [], "categories": cats}
    for k, f in enumerate(("r", "c", "f")):
        add(val, 11, classes[f], 5 + 30 * k, 30, 25)
    add(val, 12, classes["r"], 30, 30, 40)
    val["images"][1]["neg_category_ids"] = [classes["f"]]
    os.makedirs(os.path.join(str(root), "lvis"), exist_ok=True)
    for split, data in (("train", train), ("val", val)):
        with open(os.path.join(str(root), "lvis", "lvis_v1_{}.json".format(split)), "w") as f:
            json.dump(data, f)
    return classes


def test_lvis_rule_repeats_a_rare_class_cyclically_and_takes_invalid_ones_when_none_is_valid():
    images = [{"id": i, "width": 100, "height": 100} for i in (1, 2, 3)]
    anns = [_ann(1, 1, 7, 20, 20, 40), _ann(2, 2, 7, 20, 20, 40),            # 2 valid
            _ann(3, 1, 8, 20, 20, 10), _ann(4, 1, 8, 50, 50, 10),            # 3 invalid
            _ann(5, 3, 8, 1, 1, 40)]
    data = {"images": images, "annotations": anns, "categories": []}
    picks = sample_references(data, [7, 8], 5, seed=0, remove_bad=False, allow_invalid=True,
                              allow_duplicates=True)
    first, second = picks[7][:2]
    assert {first, second} == {(1, 1), (2, 2)} and picks[7] == [first, second] * 2 + [first]
    assert set(picks[8][:3]) == {(1, 3), (1, 4), (3, 5)} and picks[8][3:] == picks[8][:2]
    two = sample_references(data, [8], 2, seed=0, remove_bad=False, allow_invalid=True,
                            allow_duplicates=True)
    assert len(set(two[8])) == 2 and set(two[8]) < {(1, 3), (1, 4), (3, 5)}
    with pytest.raises(ValueError, match="category 7 has only 2 valid annotations"):
        sample_references(data, [7], 5, seed=0)
    with pytest.raises(ValueError, match="category 8 has only 0 valid"):
        sample_references(data, [8], 1, seed=0, allow_invalid=True)


def test_lvis_references_hold_k_shots_of_every_class_copies_with_fresh_ids(root):
    make_lvis_tree(root)
    dicts = DatasetCatalog.get("lvis_v1_train_2shot_seed42")
    anns = [a for d in dicts for a in d["annotations"]]
    assert Counter(a["category_id"] for a in anns) == Counter({c: 2 for c in range(1203)})
    with open(MetadataCatalog.get("lvis_v1_train_2shot_seed42").json_file) as f:
        written = json.load(f)
    ids = [a["id"] for a in written["annotations"]]
    assert len(ids) == len(set(ids)) == 2406
    by_cat = {}
    for a in written["annotations"]:
        by_cat.setdefault(a["category_id"], []).append(a)
    # class 2: its one valid annotation and a copy of it; class 3: two of its invalid ones.
    assert [a.get("refseg_copy_of") for a in by_cat[2]] == [None, by_cat[2][0]["id"]]
    assert all(a["bbox"][2] == 10 for a in by_cat[3]) and len({a["id"] for a in by_cat[3]}) == 2
    # class 1: two valid annotations in distinct images, no copy.
    assert len({a["image_id"] for a in by_cat[1]}) == 2
    coco = os.path.join(str(root), "coco")
    assert {d["file_name"] for d in dicts} == {
        os.path.join(coco, "train2017", "{:012d}.jpg".format(i)) for i in (1, 2, 3)}
    meta = MetadataCatalog.get("lvis_v1_train_2shot_seed42")
    assert meta.reference_of == "lvis_v1_val"
    assert meta.thing_classes == MetadataCatalog.get("lvis_v1_val").thing_classes


def test_lvis_val_is_detectron2s_registration_under_the_benchmark_root(root):
    make_lvis_tree(root)
    meta = MetadataCatalog.get("lvis_v1_val")
    assert meta.evaluator_type == "lvis"
    assert meta.json_file == os.path.join(str(root), "lvis", "lvis_v1_val.json")
    dicts = DatasetCatalog.get("lvis_v1_val")
    coco = os.path.join(str(root), "coco")
    assert [d["file_name"] for d in dicts] == [
        os.path.join(coco, "val2017", "000000000011.jpg"),
        os.path.join(coco, "train2017", "000000000012.jpg"),
        os.path.join(coco, "train2017", "000000000013.jpg"),
    ]


def test_lvis_evaluator_gives_federated_ap_per_frequency_with_the_configs_max_detections(
        root, tmp_path):
    classes = make_lvis_tree(root)
    dicts = DatasetCatalog.get("lvis_v1_val")
    rare, common, frequent = (classes[f] - 1 for f in ("r", "c", "f"))
    inputs, outputs = _perfect_predictions(dicts, {rare, frequent})
    # Two frequent-class false positives scored above its true positive (0.9): on image 12,
    # where the class is negative, it counts; on image 13, where the class is neither
    # annotated nor negative, the federated protocol ignores it.
    for index in (1, 2):
        fp = Instances((100, 100))
        fp.pred_boxes = Boxes(torch.tensor([[60.0, 60.0, 90.0, 90.0]]))
        fp.scores = torch.tensor([0.99])
        fp.pred_classes = torch.tensor([frequent])
        fp.pred_masks = torch.zeros((1, 100, 100), dtype=torch.bool)
        fp.pred_masks[0, 60:90, 60:90] = True
        outputs[index]["instances"] = Instances.cat([outputs[index]["instances"], fp])

    cfg = _cfg(["MODEL.REFSEG.MAX_DETECTIONS", "300"])
    assert build_evaluator(cfg, "lvis_v1_val", str(tmp_path / "e300"))._max_dets_per_image == 300
    evaluator = build_evaluator(_cfg(), "lvis_v1_val", str(tmp_path / "eval"))
    assert evaluator._max_dets_per_image == 100
    evaluator.reset()
    evaluator.process(inputs, outputs)
    results = evaluator.evaluate()
    for task in ("bbox", "segm"):
        # rare found exactly (100), common missed (0); frequent: one false positive, then its
        # one true positive, so precision 1/2 at every recall (50). AP = (100 + 0 + 50) / 3.
        assert results[task]["APr"] == pytest.approx(100.0, abs=1e-6)
        assert results[task]["APc"] == pytest.approx(0.0, abs=1e-6)
        assert results[task]["APf"] == pytest.approx(50.0, abs=1e-6)
        assert results[task]["AP"] == pytest.approx(50.0, abs=1e-4)


def test_gfsod_end_to_end_with_fsdet_references_and_the_tiny_model(random_weights, tmp_path):
    sys.path.insert(0, os.path.join(REPO, "tools"))
    import train_net

    data = tmp_path / "data"
    register_under(data)
    make_coco_tree(str(data), images=True)
    write_fsdet_files(data, 0, 1, list(COCO_THING_CLASSES), images_per_class=1, images=True)
    sam2, dinov2 = random_weights
    args = train_net.get_parser().parse_args([
        "--config-file", TINY_CONFIG, "--eval-only",
        "DATASETS.REFERENCE", '("coco_tfa_all_1shot_seed0",)',
        "DATASETS.TEST", '("coco_gfsod_val_all",)', "OUTPUT_DIR", str(tmp_path / "out"),
        "MODEL.REFSEG.SAM2.WEIGHTS", sam2, "MODEL.REFSEG.ENCODER.WEIGHTS", dinov2,
    ])
    train_net.main(args)
    with open(str(tmp_path / "out" / "metrics.json")) as f:
        metrics = json.load(f)
    assert set(metrics) == {"bbox", "segm"}
    predictions = torch.load(str(tmp_path / "out" / "inference" / "coco_gfsod_val_all" /
                                 "instances_predictions.pth"), weights_only=False)
    assert sum(len(p["instances"]) for p in predictions) > 0
    for task in ("bbox", "segm"):
        res = metrics[task]
        assert len([k for k in res if k.startswith("AP-")]) == 80
        # Classes with ground truth in val2017 of make_coco_tree: truck (base); person,
        # bicycle, car (novel). bAP is truck's AP, nAP the mean of the three, AP of the four.
        novel = [res["AP-person"], res["AP-bicycle"], res["AP-car"]]
        assert res["bAP"] == pytest.approx(res["AP-truck"], abs=1e-4)
        assert res["nAP"] == pytest.approx(np.mean(novel), abs=1e-4)
        assert res["AP"] == pytest.approx(np.mean(novel + [res["AP-truck"]]), abs=1e-4)
