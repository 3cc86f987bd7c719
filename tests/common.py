"""Helpers for building tiny configs and registering test datasets."""
import json
import os

from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog
from detectron2.data.datasets import register_coco_instances

from refseg_d2 import add_refseg_config
from refseg_d2.utils.catalog import unregister

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_CONFIG = os.path.join(REPO, "configs", "quick_schedules", "refseg_tiny_cpu.yaml")


def tiny_cfg(random_weights, output_dir="", opts=()):
    """The tiny CPU config with the random checkpoints in the WEIGHTS keys."""
    cfg = get_cfg()
    add_refseg_config(cfg)
    cfg.merge_from_file(TINY_CONFIG)
    sam2, dinov2 = random_weights
    cfg.merge_from_list(
        ["MODEL.REFSEG.SAM2.WEIGHTS", sam2, "MODEL.REFSEG.ENCODER.WEIGHTS", dinov2,
         "OUTPUT_DIR", str(output_dir)] + list(opts)
    )
    return cfg


def register(name, split):
    """Register a (json, image_root) split under ``name`` (replacing an earlier one)."""
    register_coco_instances(unregister(name), {}, split[0], split[1])
    return name


def register_edited(name, split, tmp_path, edit):
    """Register a copy of ``split`` whose COCO json was changed in place by ``edit(data)``."""
    with open(split[0]) as f:
        data = json.load(f)
    edit(data)
    path = os.path.join(str(tmp_path), name + ".json")
    with open(path, "w") as f:
        json.dump(data, f)
    return register(name, (path, split[1]))


def count_loads_and_checks(name, monkeypatch):
    """
    Count how often the registered dataset ``name`` is loaded and how often the trainer checks a
    dataset's image files. Returns (loads, checks, load): two lists that grow by one item per
    call, and the original loader.
    """
    from refseg_d2.engine import trainer

    loads, checks = [], []
    load = DatasetCatalog[name]
    DatasetCatalog.remove(name)
    DatasetCatalog.register(name, lambda: loads.append(1) or load())
    real_check = trainer.check_image_files
    monkeypatch.setattr(trainer, "check_image_files",
                        lambda dicts, what: checks.append(what) or real_check(dicts, what))
    return loads, checks, load
