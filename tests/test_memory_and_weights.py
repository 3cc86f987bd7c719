"""Memory bank persistence and weight loading: clear errors, nothing silently dropped."""
import os

import pytest
import torch
from common import register, register_edited, tiny_cfg

from refseg_d2 import RefSegCheckpointer, RefSegTrainer, fill_memory
from refseg_d2.engine import check_memory_matches
from refseg_d2.modeling.memory import MemoryBank


@pytest.fixture(scope="module")
def filled(random_weights, synthetic, tmp_path_factory):
    out = tmp_path_factory.mktemp("mem")
    cfg = tiny_cfg(random_weights, out)
    model = RefSegTrainer.build_model(cfg)
    fill_memory(cfg, model, [register("mem_refs", synthetic["refs"])])
    RefSegCheckpointer(model, save_dir=str(out)).save("memory")
    return model, cfg, os.path.join(str(out), "memory.pth")


def test_memory_keeps_instance_means_counts_and_class_ids():
    mem = MemoryBank(2, {"name": "x"})
    mem.set([4, 9], ["a", "b"], [torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([[0.0, 2.0]])])
    assert mem.instance_features.shape == (2, 2, 2)
    assert mem.counts.tolist() == [2, 1] and mem.class_ids.tolist() == [4, 9]
    assert torch.allclose(mem.prototypes(), torch.tensor([[0.5 ** 0.5, 0.5 ** 0.5], [0.0, 1.0]]))


def test_saved_memory_reloads_identically_into_a_new_model(filled, random_weights, tmp_path):
    model, cfg, path = filled
    fresh = RefSegTrainer.build_model(tiny_cfg(random_weights, tmp_path))
    RefSegCheckpointer(fresh).load(path)
    for key in ("instance_features", "counts", "class_ids"):
        assert torch.equal(getattr(fresh.memory, key), getattr(model.memory, key))
    assert fresh.memory.class_names == model.memory.class_names
    assert fresh.memory.is_ready


def test_saved_memory_file_is_compact(filled):
    _, _, path = filled
    assert os.path.getsize(path) < 200_000   # memory only, no SAM 2 / DINOv2 weights


def test_memory_from_another_encoder_is_refused(filled, random_weights, tmp_path):
    _, _, path = filled
    other = RefSegTrainer.build_model(
        tiny_cfg(random_weights, tmp_path, ["MODEL.REFSEG.ENCODER.INPUT_SIZE", 56])
    )
    with pytest.raises(ValueError, match="built with encoder"):
        RefSegCheckpointer(other).load(path)


def test_memory_from_other_encoder_weights_is_refused(filled, random_weights, tmp_path):
    _, _, path = filled
    sam2, _ = random_weights
    from refseg_d2.modeling.encoders import DinoV2Encoder

    enc = DinoV2Encoder("dinov2_vits14", "", 518, random_init=True, seed=1)
    other_weights = str(tmp_path / "other_dinov2.pth")
    torch.save(enc.backbone.state_dict(), other_weights)
    other = RefSegTrainer.build_model(tiny_cfg((sam2, other_weights), tmp_path))
    with pytest.raises(ValueError, match="weights"):
        RefSegCheckpointer(other).load(path)


def test_file_without_memory_is_refused_with_its_name(random_weights, tmp_path):
    model = RefSegTrainer.build_model(tiny_cfg(random_weights, tmp_path))
    sam2, _ = random_weights
    with pytest.raises(ValueError, match="holds no refseg memory"):
        RefSegCheckpointer(model).load(sam2)


def test_memory_for_other_classes_is_a_clear_error(filled, synthetic, tmp_path):
    model, _, _ = filled

    def rename(data):
        data["categories"][0]["name"] = "purple_star"

    name = register_edited("other_classes", synthetic["targets"], tmp_path, rename)
    with pytest.raises(ValueError, match="purple_star") as err:
        check_memory_matches(model.memory, name)
    assert "red_square" in str(err.value)


def test_missing_weight_file_is_an_error_naming_it(random_weights, tmp_path):
    cfg = tiny_cfg(random_weights, tmp_path, ["MODEL.REFSEG.ENCODER.WEIGHTS", "nowhere/dino.pth"])
    with pytest.raises(FileNotFoundError, match="nowhere/dino.pth"):
        RefSegTrainer.build_model(cfg)


def test_wrong_weight_file_is_an_error_naming_it(random_weights, tmp_path):
    sam2, dinov2 = random_weights
    cfg = tiny_cfg(random_weights, tmp_path, ["MODEL.REFSEG.SAM2.WEIGHTS", dinov2])
    with pytest.raises(ValueError, match=os.path.basename(dinov2)):
        RefSegTrainer.build_model(cfg)
    cfg = tiny_cfg(random_weights, tmp_path, ["MODEL.REFSEG.ENCODER.NAME", "dinov2_vitb14"])
    with pytest.raises(ValueError, match=os.path.basename(dinov2)):
        RefSegTrainer.build_model(cfg)


def test_empty_weights_need_random_init(random_weights, tmp_path):
    cfg = tiny_cfg(random_weights, tmp_path, ["MODEL.REFSEG.SAM2.WEIGHTS", ""])
    with pytest.raises(ValueError, match="RANDOM_INIT"):
        RefSegTrainer.build_model(cfg)
    cfg = tiny_cfg(random_weights, tmp_path, ["MODEL.REFSEG.SAM2.WEIGHTS", "",
                                              "MODEL.REFSEG.RANDOM_INIT", True])
    assert RefSegTrainer.build_model(cfg) is not None


def test_unknown_sam2_config_is_a_clear_error(random_weights, tmp_path):
    cfg = tiny_cfg(random_weights, tmp_path, ["MODEL.REFSEG.SAM2.CONFIG", "configs/sam2/nope.yaml"])
    with pytest.raises(ValueError, match="nope.yaml"):
        RefSegTrainer.build_model(cfg)


def test_category_without_reference_fails_before_any_encoding(random_weights, synthetic, tmp_path):
    def drop_green_discs(data):
        data["annotations"] = [a for a in data["annotations"] if a["category_id"] != 7]

    name = register_edited("refs_missing", synthetic["refs"], tmp_path, drop_green_discs)
    cfg = tiny_cfg(random_weights, tmp_path)
    model = RefSegTrainer.build_model(cfg)
    model.encode_references = None   # any encoding attempt would raise TypeError
    with pytest.raises(ValueError, match="green_disc"):
        fill_memory(cfg, model, [name])
