"""Test loader and evaluator choice: missing images fail early; COCO bbox + segm."""
import pytest
from common import register, register_edited, tiny_cfg

from refseg_d2 import RefSegTrainer


def test_coco_evaluator_evaluates_bbox_and_segm(synthetic, random_weights, tmp_path):
    name = register("eval_targets", synthetic["targets"])
    evaluator = RefSegTrainer.build_evaluator(tiny_cfg(random_weights, tmp_path), name)
    assert set(evaluator._tasks) == {"bbox", "segm"}
    assert evaluator._max_dets_per_image == [1, 10, 100]


def test_ground_truth_without_masks_is_evaluated_on_boxes_only(synthetic, random_weights, tmp_path):
    def drop_masks(data):
        for ann in data["annotations"]:
            ann.pop("segmentation", None)

    name = register_edited("eval_boxes_only", synthetic["targets"], tmp_path, drop_masks)
    evaluator = RefSegTrainer.build_evaluator(tiny_cfg(random_weights, tmp_path), name)
    assert evaluator._tasks == ("bbox",)


def test_missing_test_images_fail_before_inference_and_are_listed(synthetic, random_weights, tmp_path):
    def lose_an_image(data):
        data["images"][1]["file_name"] = "gone.png"

    name = register_edited("eval_missing", synthetic["targets"], tmp_path, lose_an_image)
    with pytest.raises(FileNotFoundError, match="gone.png"):
        RefSegTrainer.build_test_loader(tiny_cfg(random_weights, tmp_path), name)


def _perturbed_predictions(dicts, seed):
    """Per image, detections near its ground-truth masks (shifted, some wrong classes)."""
    import numpy as np
    import torch
    from detectron2.structures import Boxes, Instances

    from refseg_d2.modeling.ops import masks_to_boxes_inclusive
    from refseg_d2.utils.masks import decode_segmentation

    rng = np.random.RandomState(seed)
    outputs = []
    for d in dicts:
        masks, classes = [], []
        for ann in d["annotations"]:
            mask = decode_segmentation(ann["segmentation"], d["height"], d["width"])
            for _ in range(3):
                dx, dy = rng.randint(-6, 7, size=2)
                masks.append(np.roll(np.roll(mask, dx, axis=1), dy, axis=0))
                classes.append(ann["category_id"] if rng.rand() < 0.8 else rng.randint(3))
        inst = Instances((d["height"], d["width"]))
        m = torch.from_numpy(np.stack(masks)) if masks else torch.zeros((0, d["height"], d["width"]), dtype=torch.bool)
        inst.pred_masks = m
        inst.pred_boxes = Boxes(masks_to_boxes_inclusive(m).float())
        inst.scores = torch.from_numpy(rng.rand(len(masks)).astype(np.float32))
        inst.pred_classes = torch.tensor(classes, dtype=torch.int64)
        outputs.append({"instances": inst})
    return outputs


def test_every_coco_eval_implementation_gives_the_numbers_of_pycocotools(tmp_path, monkeypatch):
    import faster_coco_eval
    from detectron2.config import get_cfg
    from detectron2.data import DatasetCatalog

    from refseg_d2 import add_refseg_config
    from refseg_d2.testing.synthetic import make_split

    name = register("eval_impls", make_split(str(tmp_path), "impl", 12, seed=4, first_image_id=1))
    dicts = DatasetCatalog.get(name)
    outputs = _perturbed_predictions(dicts, seed=0)
    calls = []
    real = faster_coco_eval.COCOeval_faster.evaluate
    monkeypatch.setattr(faster_coco_eval.COCOeval_faster, "evaluate",
                        lambda self: calls.append(1) or real(self))
    results = {}
    for impl in ("pycocotools", "detectron2", "faster_coco_eval"):
        cfg = get_cfg()
        add_refseg_config(cfg)
        cfg.MODEL.REFSEG.EVAL.COCO_IMPL = impl
        evaluator = RefSegTrainer.build_evaluator(cfg, name, str(tmp_path / impl))
        evaluator.reset()
        for d, out in zip(dicts, outputs):
            evaluator.process([d], [out])
        results[impl] = evaluator.evaluate()
    assert len(calls) == 2                        # bbox and segm, by faster-coco-eval
    reference = results["pycocotools"]
    assert 0 < reference["segm"]["AP"] < 100 and len(reference["bbox"]) > 6
    for impl, res in results.items():
        for task in ("bbox", "segm"):
            assert res[task].keys() == reference[task].keys(), impl
            for key, value in reference[task].items():
                assert res[task][key] == pytest.approx(value, abs=1e-9, nan_ok=True), (impl, task, key)
