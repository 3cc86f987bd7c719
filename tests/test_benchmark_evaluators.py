"""Benchmark evaluators on small cases worked out by hand: both VOC metrics, semantic mIoU."""
import json
import math

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from common import register
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog
from detectron2.structures import Boxes, Instances
from test_benchmark_datasets import make_voc_tree, register_under

from refseg_d2 import RefSegTrainer, add_refseg_config
from refseg_d2.evaluation import InstancesToSemanticEvaluator, instances_to_semantic

VOC_TEST = {
    "000010": [("bird", 0, (11, 21, 60, 80)), ("bird", 1, (100, 30, 150, 90)),
               ("bus", 0, (30, 90, 90, 140)), ("cow", 0, (120, 95, 190, 145))],
    "000011": [("bird", 0, (20, 20, 80, 80)), ("motorbike", 0, (100, 20, 160, 80)),
               ("sofa", 0, (20, 90, 90, 140))],
}


def _instances(shape, boxes, scores, classes, masks=None):
    inst = Instances(shape)
    inst.pred_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
    inst.scores = torch.tensor(scores, dtype=torch.float32)
    inst.pred_classes = torch.tensor(classes, dtype=torch.int64)
    if masks is not None:
        inst.pred_masks = torch.from_numpy(np.asarray(masks, dtype=bool))
    return inst


def _exact(box):
    """A predicted box matching a VOC box: Detectron2's loader convention (xmin - 1, ymin - 1)."""
    x0, y0, x1, y1 = box
    return [x0 - 1, y0 - 1, x1 - 1, y1 - 1]


def test_voc_novel_test_set_reports_coco_style_and_voc07_ap50(tmp_path):
    register_under(tmp_path)
    make_voc_tree(str(tmp_path), test_objects=VOC_TEST)
    cfg = get_cfg()
    add_refseg_config(cfg)
    name = "voc_2007_test_novel1"   # bird, bus, cow, motorbike, sofa
    evaluator = RefSegTrainer.build_evaluator(cfg, name, output_folder=str(tmp_path / "eval"))
    evaluator.reset()
    dicts = {d["file_name"].rsplit("/", 1)[-1]: d for d in DatasetCatalog.get(name)}
    shape = (150, 200)
    # Bird: a true positive (0.9), a false positive (0.8), a detection of the difficult
    # bird (0.7, ignored by both metrics); the second bird is missed. Other classes: exact.
    evaluator.process([dicts["000010.jpg"]], [{"instances": _instances(
        shape, [_exact(VOC_TEST["000010"][i][2]) for i in (0, 1, 2, 3)], [0.9, 0.7, 0.9, 0.9],
        [0, 0, 1, 2])}])
    evaluator.process([dicts["000011.jpg"]], [{"instances": _instances(
        shape, [[150, 100, 190, 140]] + [_exact(VOC_TEST["000011"][i][2]) for i in (1, 2)],
        [0.8, 0.9, 0.9], [0, 3, 4])}])
    res = evaluator.evaluate()
    assert set(res) == {"bbox", "voc07_bbox"}          # box-only ground truth: no segm
    # VOC07 11-point: recall 0.5 at precision 1 -> 6 of the 11 points -> 54.5 for bird.
    assert res["voc07_bbox"]["AP50-bird"] == pytest.approx(600 / 11)
    assert res["voc07_bbox"]["AP50"] == pytest.approx((400 + 600 / 11) / 5)
    # COCO 101-point: recall thresholds 0.00..0.50 at precision 1 -> 51 / 101 for bird.
    assert res["bbox"]["AP50"] == pytest.approx((400 + 5100 / 101) / 5)


def _rle(mask):
    rle = mask_util.encode(np.asfortranarray(np.asarray(mask, dtype=np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def _grid(cells, shape=(4, 4)):
    m = np.zeros(shape, dtype=bool)
    for r, c in cells:
        m[r, c] = True
    return m


def _rows(rows, cols):
    return [(r, c) for r in rows for c in cols]


def test_semantic_map_lets_the_higher_score_win_and_ignores_low_scores():
    masks = [_grid(_rows([0, 1], [0, 1])), _grid(_rows([1], [0, 1, 2])), _grid([(3, 3)])]
    out = instances_to_semantic(masks, [0.6, 0.9, 0.4], [0, 1, 0], num_classes=2, score_thresh=0.5)
    assert out.tolist() == [[0, 0, 2, 2], [1, 1, 1, 2], [2, 2, 2, 2], [2, 2, 2, 2]]
    tie = instances_to_semantic(masks[:2], [0.7, 0.7], [0, 1], num_classes=2, score_thresh=0.5)
    assert tie[1, 0] == 0     # equal scores: the earlier prediction wins


def test_semantic_miou_on_a_hand_computed_case(tmp_path):
    a, b = _grid(_rows([0, 1], range(4))), _grid(_rows([2, 3], [0, 1]))
    crowd = _grid(_rows([3], [2, 3]))
    data = {
        "images": [{"id": 1, "file_name": "1.png", "width": 4, "height": 4},
                   {"id": 2, "file_name": "2.png", "width": 4, "height": 4}],
        "categories": [{"id": 5, "name": "a"}, {"id": 9, "name": "b"}, {"id": 12, "name": "c"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 5, "segmentation": _rle(a), "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 9, "segmentation": _rle(b), "iscrowd": 0},
            {"id": 3, "image_id": 1, "category_id": 5, "segmentation": _rle(crowd), "iscrowd": 1},
            {"id": 4, "image_id": 2, "category_id": 9, "segmentation": _rle(_grid([(0, 0)])),
             "iscrowd": 0},
        ],
    }
    for ann in data["annotations"]:
        ann["bbox"] = list(mask_util.toBbox(ann["segmentation"]))
        ann["area"] = float(mask_util.area(ann["segmentation"]))
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(data))
    name = register("semseg_hand_case", (str(path), str(tmp_path)))
    DatasetCatalog.get(name)
    evaluator = InstancesToSemanticEvaluator(name, score_thresh=0.5, distributed=False)
    evaluator.reset()
    masks1 = [_grid(_rows([0, 1, 2], range(4))), _grid(_rows([1, 2, 3], [0, 1])),
              _grid(_rows([3], [2, 3]))]
    preds1 = _instances((4, 4), [[0, 0, 1, 1]] * 3, [0.9, 0.8, 0.3], [0, 1, 1], masks=masks1)
    preds2 = _instances((4, 4), [[0, 0, 1, 1]], [0.6], [1], masks=[_grid([(0, 0), (0, 1)])])
    evaluator.process([{"image_id": 1}, {"image_id": 2}],
                      [{"instances": preds1}, {"instances": preds2}])
    res = evaluator.evaluate()["sem_seg"]
    # Pixel counts (ground truth, prediction): (a, a) 8, (b, a) 2, (bg, a) 2, (b, b) 3, (bg, b) 1,
    # (bg, bg) 14; the crowd-only pixels are ignored. IoU = tp / (gt + pred - tp).
    assert res["IoU-a"] == pytest.approx(100 * 8 / (8 + 12 - 8))
    assert res["IoU-b"] == pytest.approx(100 * 3 / (5 + 4 - 3))
    assert res["IoU-background"] == pytest.approx(100 * 14 / 17)
    assert math.isnan(res["IoU-c"])                         # no pixel: left out of the mean
    assert res["mIoU"] == pytest.approx(100 * (8 / 12 + 3 / 6) / 2)


def test_coco20i_test_sets_get_instance_and_semantic_evaluators(tmp_path):
    from test_benchmark_datasets import make_coco_tree

    register_under(tmp_path)
    make_coco_tree(str(tmp_path))
    cfg = get_cfg()
    add_refseg_config(cfg)
    evaluator = RefSegTrainer.build_evaluator(cfg, "coco20i_split1_val", str(tmp_path / "e"))
    kinds = sorted(type(e).__name__ for e in evaluator._evaluators)
    assert kinds == ["InstancesToSemanticEvaluator", "RefSegCOCOEvaluator"]
    assert set(evaluator._evaluators[0]._tasks) == {"bbox", "segm"}


# Small objects: a box 1 px short would have IoU 0.81 (9 x 9 of 10 x 10) and fail from IoU 0.85.
VOC_SMALL = {
    "000010": [("bird", 0, (11, 21, 20, 30)), ("bird", 1, (100, 30, 150, 90)),
               ("bus", 0, (30, 90, 39, 99)), ("cow", 0, (120, 95, 127, 110))],
    "000011": [("bird", 0, (20, 20, 31, 29)), ("motorbike", 0, (100, 20, 109, 29)),
               ("sofa", 0, (20, 90, 29, 99))],
}


def test_predictions_equal_to_the_annotated_objects_score_100_at_every_iou_in_both_metrics(
        tmp_path):
    from refseg_d2.modeling.ops import masks_to_boxes_inclusive

    register_under(tmp_path)
    make_voc_tree(str(tmp_path), test_objects=VOC_SMALL)
    cfg = get_cfg()
    add_refseg_config(cfg)
    name = "voc_2007_test_novel1"
    classes = ["bird", "bus", "cow", "motorbike", "sofa"]
    evaluator = RefSegTrainer.build_evaluator(cfg, name, output_folder=str(tmp_path / "eval"))
    evaluator.reset()
    dicts = {d["file_name"].rsplit("/", 1)[-1]: d for d in DatasetCatalog.get(name)}
    for file_id, objects in VOC_SMALL.items():
        masks, labels = [], []
        for cls, difficult, (x0, y0, x1, y1) in objects:
            if difficult:
                continue
            mask = np.zeros((150, 200), dtype=bool)
            mask[y0 - 1 : y1, x0 - 1 : x1] = True      # XML: 1-based, inclusive
            masks.append(mask)
            labels.append(classes.index(cls))
        masks = torch.from_numpy(np.stack(masks))
        boxes = masks_to_boxes_inclusive(masks).float().tolist()   # what the model outputs
        inst = _instances((150, 200), boxes, [0.9] * len(labels), labels, masks)
        evaluator.process([dicts[file_id + ".jpg"]], [{"instances": inst}])
    res = evaluator.evaluate()
    for key in ("AP", "AP50", "AP75"):
        assert res["voc07_bbox"][key] == pytest.approx(100.0), key
        assert res["bbox"][key] == pytest.approx(100.0), key
    assert all(res["voc07_bbox"]["AP50-" + c] == pytest.approx(100.0) for c in classes)
