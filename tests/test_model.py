"""RefSeg with the real SAM 2 / DINOv2 architectures at random initialisation."""
import ctypes
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from common import REPO, register, tiny_cfg
from detectron2.data import DatasetCatalog
from PIL import Image

from refseg_d2 import RefSegTargetMapper, RefSegTrainer, fill_memory
from refseg_d2.modeling import ops


@pytest.fixture(scope="module")
def model_and_cfg(random_weights, synthetic, tmp_path_factory):
    cfg = tiny_cfg(random_weights, tmp_path_factory.mktemp("out"))
    model = RefSegTrainer.build_model(cfg)
    fill_memory(cfg, model, [register("model_refs", synthetic["refs"])])
    return model, cfg


def _targets(synthetic, cfg):
    mapper = RefSegTargetMapper(cfg)
    return [mapper(d) for d in DatasetCatalog.get(register("model_targets", synthetic["targets"]))]


def test_outputs_follow_the_detectron2_contract(model_and_cfg, synthetic):
    model, cfg = model_and_cfg
    inputs = _targets(synthetic, cfg)
    with torch.no_grad():
        outputs = model(inputs)
    assert len(outputs) == len(inputs)
    total = 0
    for inp, out in zip(inputs, outputs):
        inst = out["instances"]
        assert inst.image_size == (inp["height"], inp["width"])
        assert inst.pred_masks.dtype == torch.bool
        assert inst.pred_masks.shape[1:] == (inp["height"], inp["width"])
        assert len(inst) <= cfg.MODEL.REFSEG.MAX_DETECTIONS
        assert torch.all(inst.scores[:-1] >= inst.scores[1:])
        assert torch.all(inst.scores > 0) and not torch.isnan(inst.scores).any()
        assert torch.all((inst.pred_classes >= 0) & (inst.pred_classes < 3))
        expected_boxes = ops.masks_to_boxes_inclusive(inst.pred_masks).float()
        assert torch.equal(inst.pred_boxes.tensor, expected_boxes)
        assert inst.pred_masks.flatten(1).any(dim=1).all()
        total += len(inst)
    assert total > 0


def test_at_most_max_detections_are_kept(model_and_cfg, synthetic):
    model, cfg = model_and_cfg
    inputs = _targets(synthetic, cfg)[:2]
    with torch.no_grad():
        full = [o["instances"] for o in model(inputs)]
        model.matcher.max_detections = 2
        try:
            top = [o["instances"] for o in model(inputs)]
        finally:
            model.matcher.max_detections = cfg.MODEL.REFSEG.MAX_DETECTIONS
    for a, b in zip(full, top):
        assert len(b) == min(2, len(a))
        assert torch.equal(b.scores, a.scores[: len(b)])


def test_memory_bank_hook_fills_the_memory_before_training(random_weights, synthetic, tmp_path):
    from detectron2.engine import TrainerBase

    from refseg_d2 import MemoryBankHook

    cfg = tiny_cfg(random_weights, tmp_path, ["DATASETS.REFERENCE", ("hook_refs",)])
    register("hook_refs", synthetic["refs"])
    trainer = TrainerBase()
    trainer.model = RefSegTrainer.build_model(cfg)
    trainer.register_hooks([MemoryBankHook(cfg)])
    trainer.before_train()
    assert trainer.model.memory.is_ready
    assert (tmp_path / "refseg_memory.pth").is_file()


def test_image_where_no_mask_survives_gives_empty_instances(random_weights, synthetic, tmp_path):
    cfg = tiny_cfg(random_weights, tmp_path, ["MODEL.REFSEG.PRED_IOU_THRESH", 1.0])
    model = RefSegTrainer.build_model(cfg)
    fill_memory(cfg, model, [register("empty_refs", synthetic["refs"])])
    with torch.no_grad():
        inst = model(_targets(synthetic, cfg)[:1])[0]["instances"]
    assert len(inst) == 0
    for field in ("pred_masks", "pred_boxes", "scores", "pred_classes"):
        assert inst.has(field)
    assert inst.pred_masks.shape == (0, 96, 128)


def test_prompt_count_not_divisible_by_batch_processes_every_prompt(model_and_cfg):
    model, _ = model_and_cfg
    prompter = model.prompter
    old = (prompter.pred_iou_thresh, prompter.points_per_batch)
    try:
        prompter.pred_iou_thresh, prompter.points_per_batch = -1.0, 7   # 64 prompts, 7 per batch
        image = torch.rand(1, 3, prompter.input_size, prompter.input_size)
        with torch.no_grad():
            logits, ious = prompter.decode_point_grid(*prompter.encode_image(image))
    finally:
        prompter.pred_iou_thresh, prompter.points_per_batch = old
    assert logits.shape[0] == ious.shape[0] == 64


def test_grayscale_target_is_segmented(model_and_cfg, tmp_path):
    model, cfg = model_and_cfg
    path = str(tmp_path / "gray.png")
    Image.fromarray(np.random.RandomState(0).randint(0, 255, (40, 70), dtype=np.uint8)).save(path)
    inputs = RefSegTargetMapper(cfg)({"file_name": path, "image_id": 1})
    with torch.no_grad():
        inst = model([inputs])[0]["instances"]
    assert inst.image_size == (40, 70)


def test_inference_without_memory_is_a_clear_error(random_weights, tmp_path):
    model = RefSegTrainer.build_model(tiny_cfg(random_weights, tmp_path))
    with pytest.raises(RuntimeError, match="memory bank is empty"):
        model([{"image": torch.zeros(3, 256, 256, dtype=torch.uint8), "height": 5, "width": 5}])


def test_box_only_references_get_sam2_masks(random_weights, synthetic, tmp_path):
    cfg = tiny_cfg(random_weights, tmp_path)
    model = RefSegTrainer.build_model(cfg)
    name = register("box_refs", synthetic["refs_boxes"])
    box_only = sum("segmentation" not in a for d in DatasetCatalog.get(name) for a in d["annotations"])
    stats = fill_memory(cfg, model, [name])
    assert model.memory.is_ready
    assert box_only > 0 and stats["sam2_masks"] == box_only
    assert stats["references"] == int(model.memory.counts.sum())


def test_model_state_dict_holds_only_the_memory(model_and_cfg):
    model, _ = model_and_cfg
    keys = set(model.state_dict().keys())
    assert keys == {"memory.instance_features", "memory.counts", "memory.class_ids"}
    assert model.memory.class_ids.tolist() == [3, 7, 12]
    assert model.memory.class_names == ["red_square", "green_disc", "blue_triangle"]


def test_one_images_proposals_match_any_memory_as_forward_does(model_and_cfg, synthetic):
    from refseg_d2 import build_memory

    model, cfg = model_and_cfg
    inputs = _targets(synthetic, cfg)[:2]
    other, _ = build_memory(cfg, model, [register("model_box_refs", synthetic["refs_boxes"])])
    own = model.memory
    assert not torch.equal(other.prototypes(), own.prototypes())
    with torch.no_grad():
        proposals = model.compute_proposals(inputs)
        for memory in (own, other):
            previous = model.set_memory(memory)
            try:
                expected = [o["instances"] for o in model(inputs)]
            finally:
                model.set_memory(previous)
            for inp, props, want in zip(inputs, proposals, expected):
                got = model.match(props, memory, inp["height"], inp["width"])
                assert torch.equal(got.pred_masks, want.pred_masks)
                assert torch.equal(got.scores, want.scores)
                assert torch.equal(got.pred_classes, want.pred_classes)
    assert model.memory is own


def test_a_memory_of_another_feature_size_is_refused(model_and_cfg):
    from refseg_d2 import MemoryBank

    model, _ = model_and_cfg
    with pytest.raises(ValueError, match="768-d features"):
        model.set_memory(MemoryBank(768, {"name": "dinov2_vitb14"}))


def test_reference_crops_in_bounded_batches_give_identical_features_and_copies_are_encoded_once(
        model_and_cfg, synthetic, tmp_path):
    from common import register_edited

    from refseg_d2 import build_memory

    def copies(data):
        first = data["annotations"][0]
        data["annotations"] += [dict(first, id=90000 + k) for k in range(3)]   # CD-FSOD style

    model, cfg = model_and_cfg
    name = register_edited("model_refs_copies", synthetic["refs"], tmp_path, copies)
    encoder, calls = model.reference_encoder, []
    real = encoder._encode_crops

    def counting(image, masks, windows, rows):
        calls.append(len(rows))
        return real(image, masks, windows, rows)

    encoder._encode_crops = counting
    try:
        memories = {}
        for per_batch in (0, 1, 2):
            encoder.crops_per_batch = per_batch
            calls.clear()
            memories[per_batch], _ = build_memory(cfg, model, [name])
            assert max(calls) <= (per_batch or max(calls))
            encoded = sum(calls)
    finally:
        encoder._encode_crops = real
        encoder.crops_per_batch = cfg.MODEL.REFSEG.MEMORY.CROPS_PER_BATCH
    annotations = sum(len(d["annotations"]) for d in DatasetCatalog.get(name))
    assert encoded == annotations - 3                    # the 3 copies reuse the first's feature
    for per_batch in (1, 2):
        assert torch.equal(memories[per_batch].instance_features, memories[0].instance_features)
    assert int(memories[0].counts.sum()) == annotations


def test_each_model_owns_its_precision_and_building_leaves_tf32_flags_alone(
        random_weights, tmp_path):
    flags = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    cfg = tiny_cfg(random_weights, tmp_path, ["MODEL.REFSEG.ACCEL.TF32", True,
                                              "MODEL.REFSEG.ACCEL.AMP", "bf16"])
    model = RefSegTrainer.build_model(cfg)
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == flags
    assert model.encoder.amp_dtype is torch.bfloat16 and model.encoder.tf32
    assert model.prompter.amp_dtype is torch.bfloat16 and model.prompter.tf32
    dtypes = []
    qkv = model.encoder.backbone.blocks[0].attn.qkv
    handle = qkv.register_forward_hook(lambda module, args, out: dtypes.append(out.dtype))
    with torch.no_grad():
        features = model.encoder(torch.rand(1, 3, 112, 112))
    handle.remove()
    assert dtypes == [torch.bfloat16] and features.shape == (1, 384, 8, 8)   # autocast inside


@pytest.mark.parametrize("attention,fused_calls", [("sdpa", 12), ("official", 0)])
def test_encoder_attention_key_picks_the_kernel_and_keeps_the_features(random_weights,
                                                                       attention, fused_calls,
                                                                       monkeypatch):
    """ENCODER.ATTENTION through the model build: the fused kernel once per ViT-S block, or
    DINOv2's own forward; the features agree to float rounding."""
    calls = []
    fused = torch.nn.functional.scaled_dot_product_attention

    def counted(*args, **kwargs):
        calls.append(args[0].shape)
        return fused(*args, **kwargs)

    images = torch.rand(2, 3, 112, 112, generator=torch.Generator().manual_seed(0))
    features = {}
    for name in ("official", attention):
        cfg = tiny_cfg(random_weights, opts=["MODEL.REFSEG.ENCODER.ATTENTION", name])
        encoder = RefSegTrainer.build_model(cfg).encoder
        monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", counted)
        calls.clear()
        with torch.no_grad():
            features[name] = encoder(images)
        monkeypatch.undo()
    assert len(calls) == fused_calls
    assert all(shape == (2, 6, 65, 64) for shape in calls)      # 8 x 8 patches + CLS, 6 heads
    assert features[attention].shape == (2, 384, 8, 8)
    torch.testing.assert_close(features[attention], features["official"], rtol=1e-5, atol=1e-5)


_MAPPED_BY_A_LARGE_TENSOR = """
import ctypes, sys
import torch
from common import tiny_cfg
from refseg_d2 import RefSegTrainer


class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]


mallinfo2 = ctypes.CDLL("libc.so.6").mallinfo2
mallinfo2.restype = MallInfo2


def mapped(mib):
    before = mallinfo2().hblkhd
    x = torch.ones(mib << 18)
    return mallinfo2().hblkhd - before


model = RefSegTrainer.build_model(tiny_cfg((sys.argv[1], sys.argv[2]), opts=[
    "MODEL.REFSEG.ACCEL.KEEP_FREED_MEMORY", sys.argv[3]]))
inside = []
model.proposal_generator = lambda batched_inputs: inside.append(mapped(64)) or []
model.compute_proposals([])
print(inside[0], mapped(128))
"""


@pytest.mark.skipif(not hasattr(ctypes.CDLL(None), "mallinfo2"), reason="needs glibc >= 2.33")
@pytest.mark.parametrize("keep", [True, False])
def test_cpu_proposals_keep_large_tensors_on_the_heap_unless_told_not_to(random_weights, keep):
    """ACCEL.KEEP_FREED_MEMORY through the model build and compute_proposals: within the
    proposal generator a 64 MiB tensor comes from glibc's heap (no new mapping); after it
    (matching, full-size masks) a 128 MiB one, more than the heap has free, gets a mapping of
    its own, as it does without the setting."""
    out = subprocess.run(
        [sys.executable, "-c", _MAPPED_BY_A_LARGE_TENSOR, *random_weights, str(keep)],
        capture_output=True, text=True, cwd=os.path.dirname(os.path.abspath(__file__)),
        env=dict(os.environ, PYTHONPATH=os.pathsep.join([REPO, os.path.join(REPO, "tests")])))
    assert out.returncode == 0, out.stderr[-3000:]
    inside, after = (int(v) for v in out.stdout.split()[-2:])
    assert inside == 0 if keep else inside >= 64 << 20
    assert after >= 128 << 20
