"""Every shipped config merges; the package registers its meta-architecture on import."""
import glob
import os
import re

import pytest
from common import REPO
from detectron2.config import get_cfg
from detectron2.modeling import META_ARCH_REGISTRY

from refseg_d2 import add_refseg_config

CONFIGS = sorted(
    p for p in glob.glob(os.path.join(REPO, "configs", "**", "*.yaml"), recursive=True)
    if not os.path.basename(p).startswith("Base-")
)


@pytest.mark.parametrize("path", CONFIGS, ids=[os.path.relpath(p, REPO) for p in CONFIGS])
def test_config_merges_with_refseg_defaults(path):
    cfg = get_cfg()
    add_refseg_config(cfg)
    cfg.merge_from_file(path)
    assert cfg.MODEL.META_ARCHITECTURE == "RefSeg"
    assert cfg.MODEL.REFSEG.MEMORY.CONTEXT_RATIO == 0.2


def test_base_config_holds_the_paper_settings():
    cfg = get_cfg()
    add_refseg_config(cfg)
    cfg.merge_from_file(os.path.join(REPO, "configs", "Base-RefSeg.yaml"))
    r = cfg.MODEL.REFSEG
    assert (r.ENCODER.NAME, r.ENCODER.INPUT_SIZE) == ("dinov2_vitl14", 518)
    assert (r.SAM2.CONFIG, r.SAM2.INPUT_SIZE) == ("configs/sam2/sam2_hiera_l.yaml", 1024)
    assert (r.POINTS_PER_SIDE, r.POINTS_PER_BATCH, r.PRED_IOU_THRESH) == (32, 256, 0.4)
    assert (r.NMS_THRESH, r.MAX_DETECTIONS, r.NMS_KEEP_FACTOR) == (0.5, 100, 8)
    assert not r.RANDOM_INIT and r.ACCEL.AMP == "" and r.ACCEL.COMPILE == ""
    assert (r.SAM2.DECODER, r.EVAL.COCO_IMPL) == ("shared", "faster_coco_eval")
    assert r.ENCODER.ATTENTION == "sdpa" and r.ACCEL.KEEP_FREED_MEMORY


def test_importing_the_package_registers_the_meta_architecture():
    assert "RefSeg" in META_ARCH_REGISTRY


BENCHMARKS = [p for p in CONFIGS if os.sep + "benchmarks" + os.sep in p
              or (os.sep + "fsod_vfm" + os.sep in p and not p.endswith("fsod_vfm.yaml"))]


@pytest.mark.parametrize("path", BENCHMARKS, ids=[os.path.basename(p) for p in BENCHMARKS])
def test_benchmark_config_names_registered_datasets_of_one_benchmark(path):
    from detectron2.data import DatasetCatalog, MetadataCatalog

    cfg = get_cfg()
    add_refseg_config(cfg)
    cfg.merge_from_file(path)
    names = list(cfg.DATASETS.REFERENCE) + list(cfg.DATASETS.TEST)
    assert len(names) == 2 and all(n in DatasetCatalog.list() for n in names)
    reference, test = (MetadataCatalog.get(n) for n in names)
    assert reference.reference_of == cfg.DATASETS.TEST[0]
    assert test.evaluator_type


def _old_config(tmp_path, body):
    old = tmp_path / "old.yaml"
    old.write_text("_BASE_: {}\nMODEL:\n  REFSEG:\n{}".format(
        os.path.join(REPO, "configs", "Base-RefSeg.yaml"), body))
    return str(old)


def test_old_proposal_cache_keys_are_ignored_in_files_and_overrides(tmp_path, caplog):
    cfg = get_cfg()
    add_refseg_config(cfg)
    cfg.merge_from_file(_old_config(tmp_path, "    CACHE:\n      ENABLED: True\n"))
    cfg.merge_from_list(["MODEL.REFSEG.CACHE.DIR", "somewhere"])
    assert "CACHE" not in cfg.MODEL.REFSEG
    assert "MODEL.REFSEG.CACHE.DIR" in caplog.text


def test_old_keys_load_with_a_warning_naming_their_replacement(tmp_path, caplog):
    cfg = get_cfg()
    add_refseg_config(cfg)
    cfg.merge_from_file(_old_config(tmp_path, (
        "    RANDOM_INIT_SEED: 3\n    UPSAMPLE_CHUNK: 8\n    SAM2:\n      DECODER_CHUNK: 4\n"
        "    MEMORY:\n      SAVE: False\n    FULL_MASKS:\n      MODE: dense\n"
        "      DENSE_MAX_PIXELS: 1000\n    ACCEL:\n      COMPILE: True\n"
        "      COMPILE_BACKEND: eager\n")))
    r = cfg.MODEL.REFSEG
    assert (r.MEMORY.SAVE_NAME, r.FULL_MASKS.MAX_PIXELS, r.ACCEL.COMPILE) == ("", 1000, "eager")
    for old in ("RANDOM_INIT_SEED", "UPSAMPLE_CHUNK", "SAM2.DECODER_CHUNK", "MEMORY.SAVE",
                "FULL_MASKS.MODE", "FULL_MASKS.DENSE_MAX_PIXELS", "ACCEL.COMPILE"):
        assert "MODEL.REFSEG.{} (=".format(old) in caplog.text
    assert "use MODEL.REFSEG.MEMORY.SAVE_NAME ''" in caplog.text
    assert "use MODEL.REFSEG.FULL_MASKS.MAX_PIXELS" in caplog.text
    assert "use MODEL.REFSEG.ACCEL.COMPILE 'eager'" in caplog.text
    cfg.merge_from_list(["MODEL.REFSEG.MEMORY.SAVE", "True", "MODEL.REFSEG.ACCEL.COMPILE", "False"])
    assert (r.MEMORY.SAVE_NAME, r.ACCEL.COMPILE) == ("refseg_memory", "")
    cfg.merge_from_list(["MODEL.REFSEG.ACCEL.COMPILE", "True"])
    assert r.ACCEL.COMPILE == "inductor"
    cfg.merge_from_list(["MODEL.REFSEG.ACCEL.COMPILE_BACKEND", "aot_eager"])
    assert r.ACCEL.COMPILE == "aot_eager"
    assert "RANDOM_INIT_SEED" not in r and "MODE" not in r.FULL_MASKS


@pytest.mark.parametrize("key,value,allowed", [
    ("SAM2.DECODER", "fast", "one of 'shared', 'official'"),
    ("ENCODER.ATTENTION", "flash", "one of 'sdpa', 'official'"),
    ("ACCEL.AMP", "fp8", "one of '', 'bf16', 'fp16'"),
    ("ACCEL.COMPILE", "tvm", "one of '', 'inductor', 'eager', 'aot_eager'"),
    ("MEMORY.BOX_MASK_SOURCE", "polygon", "one of 'sam2', 'box'"),
    ("EVAL.COCO_IMPL", "lvis", "one of 'faster_coco_eval', 'pycocotools', 'detectron2'"),
    ("FULL_MASKS.MAX_PIXELS", 0, "an integer >= 1"),
])
def test_check_names_the_key_and_the_allowed_values_declared_by_the_code(key, value, allowed):
    from refseg_d2.config import check_refseg_config

    cfg = get_cfg()
    add_refseg_config(cfg)
    node = cfg.MODEL.REFSEG
    *parents, leaf = key.split(".")
    for part in parents:
        node = node[part]
    node[leaf] = value
    with pytest.raises(ValueError, match=re.escape(
            "MODEL.REFSEG.{} = {!r} is out of range: it must be {}".format(key, value, allowed))):
        check_refseg_config(cfg)
