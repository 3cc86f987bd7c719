"""RefSegPredictor: references from datasets, arrays and files; saving/loading; calls on images."""
import numpy as np
import pytest
import torch
from common import register, tiny_cfg
from detectron2.data import DatasetCatalog
from PIL import Image

from refseg_d2 import RefSegTargetMapper, fill_memory
from refseg_d2.utils.images import read_rgb
from refseg_d2.utils.masks import decode_segmentation
from refseg_d2.engine.memory_filling import dataset_classes
from refseg_d2.predictor import RefSegPredictor


@pytest.fixture(scope="module")
def cfg(random_weights, tmp_path_factory):
    return tiny_cfg(random_weights, tmp_path_factory.mktemp("predictor"))


@pytest.fixture(scope="module")
def refs_name(synthetic):
    return register("pred_refs", synthetic["refs"])


@pytest.fixture(scope="module")
def from_dataset(cfg, refs_name):
    predictor = RefSegPredictor(cfg)
    predictor.add_reference_dataset(refs_name)
    return predictor


def reference_instances(d, names):
    """Masks (R, H, W), XYXY boxes and class names of a dataset dict's annotations."""
    anns = d["annotations"]
    masks = [decode_segmentation(a["segmentation"], d["height"], d["width"]) for a in anns]
    boxes = [[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)]
    return masks, boxes, [names[a["category_id"]] for a in anns]


def assert_same_instances(a, b):
    assert a.image_size == b.image_size
    assert torch.equal(a.pred_masks, b.pred_masks)
    assert torch.equal(a.pred_classes, b.pred_classes)
    assert torch.allclose(a.scores, b.scores)
    assert torch.equal(a.pred_boxes.tensor, b.pred_boxes.tensor)


def test_reference_dataset_gives_the_memory_of_fill_memory(cfg, refs_name, from_dataset):
    other = RefSegPredictor(cfg)
    fill_memory(cfg, other.model, [refs_name])
    mem, expected = from_dataset.memory, other.memory
    assert torch.equal(mem.instance_features, expected.instance_features)
    assert mem.class_ids.tolist() == [3, 7, 12] == expected.class_ids.tolist()
    assert from_dataset.class_names == expected.class_names
    assert [len(p) for p in from_dataset.provenance] == mem.counts.tolist()


def test_references_given_as_arrays_match_the_dataset_references(cfg, refs_name, from_dataset,
                                                                   monkeypatch):
    _, names = dataset_classes(refs_name)
    predictor = RefSegPredictor(cfg)
    catalog = sorted(DatasetCatalog.list())
    images = [np.asarray(read_rgb(d["file_name"])) for d in DatasetCatalog.get(refs_name)]

    def no_file_reads(*args, **kwargs):
        raise AssertionError("an array reference was written to or read from a file")

    monkeypatch.setattr("refseg_d2.data.mappers.read_rgb", no_file_reads)
    monkeypatch.setattr("PIL.Image.Image.save", no_file_reads)
    for d, image in zip(DatasetCatalog.get(refs_name), images):
        masks, boxes, classes = reference_instances(d, names)
        predictor.add_references(image, classes, masks=masks, boxes=boxes)
    assert sorted(DatasetCatalog.list()) == catalog     # no temporary dataset either
    assert predictor.memory.class_ids.tolist() == list(range(1, len(names) + 1))
    for c, name in enumerate(from_dataset.class_names):
        mine = predictor.class_names.index(name)
        k = int(from_dataset.memory.counts[c])
        assert int(predictor.memory.counts[mine]) == k
        assert torch.allclose(predictor.memory.instance_features[mine, :k],
                              from_dataset.memory.instance_features[c, :k], atol=1e-6)
        assert all(r["file_name"] is None for r in predictor.provenance[mine])


def test_box_only_reference_files_get_sam2_masks(cfg, synthetic):
    d = DatasetCatalog.get(register("pred_box_refs", synthetic["refs"]))[1]
    boxes = [[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in d["annotations"])]
    predictor = RefSegPredictor(cfg)
    stats = predictor.add_references(d["file_name"], ["thing"] * len(boxes), boxes=boxes)
    assert stats["sam2_masks"] == len(boxes)
    assert predictor.class_names == ["thing"] and predictor.memory.counts.tolist() == [len(boxes)]
    record = predictor.provenance[0][0]
    assert record["file_name"] == d["file_name"] and record["segmentation"] is None


def test_call_returns_the_instances_of_the_model(cfg, synthetic, from_dataset):
    d = DatasetCatalog.get(register("pred_targets", synthetic["targets"]))[1]
    with torch.no_grad():
        expected = from_dataset.model([RefSegTargetMapper(cfg)(d)])[0]["instances"]
    array = np.asarray(read_rgb(d["file_name"]))
    output = from_dataset(array)
    assert sorted(output) == ["instances"]      # DefaultPredictor's output: a dict
    assert_same_instances(output["instances"], expected)
    assert_same_instances(from_dataset(d["file_name"])["instances"], expected)
    assert_same_instances(from_dataset(Image.fromarray(array))["instances"], expected)
    from_dataset.input_format = "BGR"
    try:
        assert_same_instances(from_dataset(array[:, :, ::-1])["instances"], expected)
    finally:
        from_dataset.input_format = "RGB"


def test_saved_memory_reloads_with_its_classes_and_reference_sources(random_weights, from_dataset,
                                                                     tmp_path):
    path = from_dataset.save_memory(str(tmp_path / "saved.pth"))
    reloaded = RefSegPredictor(tiny_cfg(random_weights, tmp_path, ["MODEL.WEIGHTS", path]))
    for key in ("instance_features", "counts", "class_ids"):
        assert torch.equal(getattr(reloaded.memory, key), getattr(from_dataset.memory, key))
    assert reloaded.class_names == from_dataset.class_names
    assert reloaded.provenance == from_dataset.provenance


def test_adding_references_appends_shots_and_keeps_class_indices(cfg, refs_name, from_dataset,
                                                                 tmp_path):
    predictor = RefSegPredictor(cfg)
    predictor.load_memory(from_dataset.save_memory(str(tmp_path / "base.pth")))
    d = DatasetCatalog.get(refs_name)[0]
    _, names = dataset_classes(refs_name)
    masks, boxes, classes = reference_instances(d, names)
    predictor.add_references(d["file_name"], [classes[0], "newcomer"], masks=masks[:1] * 2,
                             boxes=boxes[:1] * 2)
    before = from_dataset.memory
    assert predictor.class_names == from_dataset.class_names + ["newcomer"]
    assert predictor.memory.class_ids.tolist() == [3, 7, 12, 13]
    c = names.index(classes[0])
    k = int(before.counts[c])
    assert int(predictor.memory.counts[c]) == k + 1
    assert torch.equal(predictor.memory.instance_features[c, :k], before.instance_features[c, :k])
    feats = predictor.memory.instance_features
    assert torch.allclose(feats[c, k], feats[3, 0])   # the same instance, added to both classes
    assert len(predictor.provenance[c]) == k + 1


def test_bad_inputs_are_clear_errors(cfg, from_dataset):
    empty = RefSegPredictor(cfg)
    image = np.zeros((40, 50, 3), dtype=np.uint8)
    with pytest.raises(RuntimeError, match="add_references"):
        empty(image)
    with pytest.raises(ValueError, match="Mask 0 of the reference array"):
        empty.add_references(image, ["a"], masks=[np.ones((41, 50), dtype=bool)])
    with pytest.raises(ValueError, match="2 class names for 1 masks"):
        empty.add_references(image, ["a", "b"], masks=[np.ones((40, 50), dtype=bool)])
    with pytest.raises(ValueError, match="needs masks or boxes"):
        empty.add_references(image, ["a"])
    with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8"):
        from_dataset(image.astype(np.float32))
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        empty.load_memory("missing.pth")


def test_an_image_array_and_its_file_give_the_same_instances(
        random_weights, from_dataset, synthetic, tmp_path):
    predictor = RefSegPredictor(tiny_cfg(random_weights, tmp_path))
    predictor.load_memory(from_dataset.save_memory(str(tmp_path / "m.pth")))
    d = DatasetCatalog.get(register("pred_array_targets", synthetic["targets"]))[0]
    array = np.asarray(read_rgb(d["file_name"]))
    assert_same_instances(predictor(array)["instances"], predictor(d["file_name"])["instances"])

def test_array_references_are_named_as_given_and_boxes_outside_the_image_are_skipped(
        cfg, caplog, monkeypatch):
    import logging

    predictor = RefSegPredictor(cfg)
    image = np.zeros((40, 50, 3), dtype=np.uint8)
    mask = np.zeros((40, 50), dtype=np.uint8)
    mask[5:35, 5:45] = 255
    encode, seen = predictor.model.encode_references, []

    def encode_and_keep(inputs):
        records = encode(inputs)
        seen.extend(records)
        return records

    monkeypatch.setattr(predictor.model, "encode_references", encode_and_keep)
    predictor.add_references(image, ["cat", "dog", "dog"], masks=[mask, mask, mask])
    assert [r.name for r in seen] == [
        "masks[0] (class 'cat')", "masks[1] (class 'dog')", "masks[2] (class 'dog')"]
    seen.clear()
    assert predictor.memory.counts.tolist() == [1, 2]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="refseg_d2"):
        predictor.add_references(image, ["cat", "cat"], boxes=[[5, 5, 40, 30], [60, 5, 80, 30]])
    assert "boxes[1] (class 'cat')" in caplog.text and "lies outside the 50x40 image" in caplog.text
    assert [r.name for r in seen] == ["boxes[0] (class 'cat')"]
    assert predictor.memory.counts.tolist() == [2, 2]


def test_mask_arrays_with_grey_levels_are_binarised_with_a_warning_naming_them(cfg, caplog):
    import logging

    predictor = RefSegPredictor(cfg)
    image = np.zeros((40, 50, 3), dtype=np.uint8)
    soft = np.zeros((40, 50), dtype=np.uint8)
    soft[5:35, 5:45], soft[4, 5:45] = 255, 100
    with caplog.at_level(logging.WARNING, logger="refseg_d2"):
        predictor.add_references(image, ["cat"], masks=[soft])
    assert "Mask masks[0] (class 'cat') is not binary" in caplog.text
    sharp = RefSegPredictor(cfg)
    sharp.add_references(image, ["cat"], masks=[soft >= 128])
    assert torch.equal(predictor.memory.instance_features, sharp.memory.instance_features)
