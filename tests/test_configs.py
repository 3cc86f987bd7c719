"""Every shipped config merges; the package registers its meta-architecture on import."""
import glob
import os

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
    assert not r.RANDOM_INIT and r.ACCEL.AMP == "" and r.FULL_MASKS.MODE == "auto"


def test_importing_the_package_registers_the_meta_architecture():
    assert "RefSeg" in META_ARCH_REGISTRY


BENCHMARKS = [p for p in CONFIGS if os.sep + "benchmarks" + os.sep in p]


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


def test_old_proposal_cache_keys_are_ignored_in_files_and_overrides(tmp_path):
    old = tmp_path / "old.yaml"
    old.write_text("_BASE_: {}\nMODEL:\n  REFSEG:\n    CACHE:\n      ENABLED: True\n".format(
        os.path.join(REPO, "configs", "Base-RefSeg.yaml")))
    cfg = get_cfg()
    add_refseg_config(cfg)
    cfg.merge_from_file(str(old))
    cfg.merge_from_list(["MODEL.REFSEG.CACHE.DIR", "somewhere"])
    assert "CACHE" not in cfg.MODEL.REFSEG
