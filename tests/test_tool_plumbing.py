"""
The plumbing the tools share: tool_setup, write_metrics, time_batches, masks_from_boxes,
unregister and the sweep's name check.
"""
import json
import os
import sys

import pytest
from common import REPO, TINY_CONFIG

sys.path.insert(0, os.path.join(REPO, "tools"))
import sweep  # noqa: E402


def test_tool_setup_registers_the_datasets_then_builds_the_config(tmp_path):
    from detectron2.data import DatasetCatalog, MetadataCatalog

    from refseg_d2.engine.defaults import refseg_tool_parser, tool_setup

    args = refseg_tool_parser().parse_args([
        "--config-file", TINY_CONFIG, "--register", "plumbing_refs", "refs.json", "imgs/",
        "--", "MODEL.REFSEG.NMS_THRESH", "0.6"])
    cfg = tool_setup(args, output_dir=str(tmp_path))
    assert "plumbing_refs" in DatasetCatalog.list()
    assert MetadataCatalog.get("plumbing_refs").json_file == "refs.json"
    assert cfg.MODEL.REFSEG.NMS_THRESH == 0.6 and cfg.OUTPUT_DIR == str(tmp_path)
    assert not cfg.is_frozen()


def test_write_metrics_writes_metrics_json_atomically(tmp_path):
    from refseg_d2.engine.defaults import METRICS_FILE, write_metrics

    path = write_metrics(str(tmp_path / "run"), {"bbox": {"AP": 1.5}})
    assert path == os.path.join(str(tmp_path / "run"), METRICS_FILE)
    assert json.load(open(path)) == {"bbox": {"AP": 1.5}}
    assert os.listdir(str(tmp_path / "run")) == [METRICS_FILE]


class _Counted:
    """A model that records the batches it sees and has the StageTimer interface."""

    def __init__(self):
        from refseg_d2.utils.timing import StageTimer

        self.timer = StageTimer()
        self.calls = []

    def __call__(self, inputs):
        self.calls.append(len(inputs))
        self.timer.num_images += len(inputs)
        return [{"n": i} for i in inputs]


@pytest.mark.parametrize("warmup,timed", [(0, 5), (1, 4), (2, 3), (5, 0)])
def test_time_batches_times_the_images_after_the_warmup(warmup, timed):
    from refseg_d2.utils.timing import time_batches

    model = _Counted()
    out = time_batches(model, [[i] for i in range(5)], warmup, keep=lambda i, o: (i[0], o[0]["n"]))
    assert model.calls == [1] * 5
    assert out["images"] == timed == model.timer.num_images
    assert out["kept"] == [(i, i) for i in range(5 - timed, 5)]
    assert out["wall_s"] >= out["model_s"] >= 0.0 and out["load_s"] >= 0.0


def _no_launch(*args, **kwargs):
    raise AssertionError("a model was about to be built")


def test_sweep_names_unknown_reference_and_test_datasets_before_building_a_model(
        tmp_path, monkeypatch):
    monkeypatch.setattr(sweep, "launch", _no_launch)
    out = str(tmp_path / "sweep")
    base = ["--config-file", TINY_CONFIG, "--output-dir", out]
    with pytest.raises(ValueError, match=r"--references: 'no_such_refs'$"):
        sweep.main(base + ["--references", "no_such_refs", "--", "DATASETS.TEST",
                           '("coco_fsod_val_novel",)'])
    with pytest.raises(ValueError, match=r"--shots/--seeds .*'no_such_3shot_seed1'.*"
                                         r"DATASETS.TEST: 'no_such_test'"):
        sweep.main(base + ["--shots", "3", "--seeds", "1", "--", "DATASETS.REFERENCE",
                           '("no_such_1shot_seed0",)', "DATASETS.TEST", '("no_such_test",)'])
    assert not os.path.exists(os.path.join(out, "sweep.json"))


def test_masks_from_boxes_do_not_depend_on_the_box_batch(random_weights):
    import torch
    from common import tiny_cfg

    import add_sam2_masks
    from refseg_d2.modeling.memory.encoding import masks_from_boxes

    prompter = add_sam2_masks.build_prompter(tiny_cfg(random_weights))
    generator = torch.Generator().manual_seed(0)
    sam_image = torch.randint(0, 256, (3, 256, 256), dtype=torch.uint8, generator=generator)
    boxes = torch.tensor([[2.0, 3.0, 40.0, 30.0], [10.0, 5.0, 70.0, 55.0], [0.0, 0.0, 80.0, 60.0]])
    with torch.no_grad():
        whole = masks_from_boxes(prompter, sam_image, boxes, (60, 80))
        batched = masks_from_boxes(prompter, sam_image, boxes, (60, 80), box_batch=2)
        none = masks_from_boxes(prompter, sam_image, boxes[:0], (60, 80))
    assert whole.shape == (3, 60, 80) and whole.dtype == torch.bool
    assert torch.equal(whole, batched)
    assert none.shape == (0, 60, 80)


def test_unregister_removes_a_dataset_and_its_metadata_and_ignores_unknown_names():
    from detectron2.data import DatasetCatalog, MetadataCatalog

    from refseg_d2.utils.catalog import unregister

    DatasetCatalog.register("plumbing_gone", lambda: [])
    MetadataCatalog.get("plumbing_gone").set(thing_classes=["a"])
    assert unregister("plumbing_gone") == "plumbing_gone"
    assert "plumbing_gone" not in DatasetCatalog.list()
    assert MetadataCatalog.get("plumbing_gone").get("thing_classes", None) is None
    unregister("plumbing_never_registered")
