"""
Full-size masks in bounded memory: streamed post-processing (chunked upsampling, areas and
run-length intersections) equals the all-at-once computation, on hand-made masks and through
the matcher and tools/train_net.py.
"""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pycocotools import mask as mask_util

from refseg_d2.modeling import mask_overlaps, ops
from refseg_d2.modeling.matching import ProposalMatcher
from refseg_d2.modeling.proposals import LogitMasks, Proposals
from refseg_d2.utils.timing import StageTimer
from test_train_net import predictions, run_train_net


def _square(size, y0, x0, side):
    m = torch.zeros(size, dtype=torch.bool)
    m[y0 : y0 + side, x0 : x0 + side] = True
    return m


def _hand_made(size=(12, 20)):
    """A 4x4 square, a 2x2 square nested in it, one touching it, an empty and a full mask."""
    return torch.stack([
        _square(size, 2, 2, 4),        # A: 16 px
        _square(size, 3, 3, 2),        # B in A: 4 px
        _square(size, 2, 6, 4),        # C touches A's right edge, shares no pixel
        torch.zeros(size, dtype=torch.bool),
        torch.ones(size, dtype=torch.bool),
    ])


def _runs(masks):
    return mask_overlaps.MaskRuns.from_chunks([(0, masks[:2]), (2, masks[2:])], len(masks),
                                              masks.shape[1:])


@pytest.mark.parametrize("way", ["runs", "bands"])
def test_overlaps_from_runs_are_the_hand_computed_intersection_over_first_area(way, monkeypatch):
    monkeypatch.setattr(mask_overlaps, "PRODUCTS_PER_RUN_STEP", 0 if way == "runs" else 1e9)
    monkeypatch.setattr(mask_overlaps, "BAND_ELEMENTS", 4 * 3)     # 3 segments at a time
    monkeypatch.setattr(mask_overlaps, "PIXEL_BAND", 16)            # runs split at 16 px
    masks = _hand_made()
    idx = torch.tensor([0, 1, 2, 4])
    runs = _runs(masks)
    assert runs.areas.tolist() == [16, 4, 16, 0, 240]
    ios = mask_overlaps.run_self_overlaps(runs)(idx)
    area_full = 12 * 20
    want = torch.tensor([
        [1.0, 4 / 16, 0.0, 16 / 16],
        [4 / 4, 1.0, 0.0, 4 / 4],
        [0.0, 0.0, 1.0, 16 / 16],
        [16 / area_full, 4 / area_full, 16 / area_full, 1.0],
    ], dtype=torch.float64)
    assert torch.equal(ios, want)
    assert torch.equal(ios, ops.dense_self_overlaps(masks)(idx))


@pytest.mark.parametrize("pixel_band", [7, 1 << 22])
@pytest.mark.parametrize("size", [(1, 1), (7, 3), (12, 20), (33, 65)])
def test_runs_give_pycocotools_encodings_and_bands_that_decode_to_the_masks(size, pixel_band,
                                                                            monkeypatch):
    monkeypatch.setattr(mask_overlaps, "PIXEL_BAND", pixel_band)
    torch.manual_seed(size[0])
    masks = torch.rand((6,) + size) > 0.5
    masks[0] = False
    masks[1] = True
    runs = _runs(masks)
    rles = runs.to_rles(torch.arange(6))
    want = mask_util.encode(masks.numpy().astype(np.uint8).transpose(2, 1, 0).copy(order="F"))
    assert [r["counts"] for r in rles] == [r["counts"] for r in want]
    assert mask_util.area(rles).tolist() == masks.flatten(1).sum(1).tolist()
    idx = torch.tensor([5, 0, 3])
    assert torch.equal(_decode(runs, idx, 5), masks[idx].flatten(1))
    kept = torch.tensor([False, True, True, False, True, True])
    sub = runs.subset(kept)
    assert torch.equal(sub.areas, masks[kept].flatten(1).sum(1))
    assert torch.equal(_decode(sub, torch.arange(4), 12), masks[kept].flatten(1))


def _decode(runs, idx, band_elements):
    """Pixels of the masks idx, expanded back from the decoded segments."""
    covered, weights = zip(*runs.decoded_bands(idx, band_elements))
    weights = torch.cat(weights)
    assert int(weights.sum()) == runs.num_pixels
    return torch.repeat_interleave(torch.cat(covered, dim=1), weights, dim=1)


def test_segments_merge_pixels_no_mask_changes_on():
    masks = torch.zeros(2, 1, 10, dtype=torch.bool)
    masks[0, 0, 2:6] = True
    masks[1, 0, 4:9] = True
    (covered, weights), = _runs(masks).decoded_bands(torch.tensor([0, 1]), 100)
    assert weights.tolist() == [2, 2, 2, 3, 1]        # edges 0, 2, 4, 6, 9, 10
    assert covered.int().tolist() == [[0, 1, 1, 0, 0], [0, 0, 1, 1, 0]]


@pytest.mark.parametrize("way", ["runs", "bands"])
def test_soft_merge_from_runs_equals_dense_and_the_hand_computed_decay(way, monkeypatch):
    monkeypatch.setattr(mask_overlaps, "PRODUCTS_PER_RUN_STEP", 0 if way == "runs" else 1e9)
    masks = _hand_made()[:3]                       # A, B (nested in A), C (touching A)
    labels = torch.zeros(3, dtype=torch.int64)
    feats = F.normalize(torch.tensor([[1.0, 0.0], [0.6, 0.8], [1.0, 0.0]]), dim=1)
    scores = torch.tensor([0.9, 0.8, 0.7])
    runs = mask_overlaps.MaskRuns.from_chunks([(0, masks)], 3, masks.shape[1:])
    merged = ops.semantic_soft_merge_overlaps(
        mask_overlaps.run_self_overlaps(runs), labels, feats, scores)
    dense = ops.semantic_soft_merge_overlaps(ops.dense_self_overlaps(masks), labels, feats, scores)
    # B lies inside A (ios 1) at cosine 0.6: 0.8 * (1 - 0.6) ** 0.5; A and C share no pixel.
    want = torch.tensor([0.9, 0.8 * 0.4 ** 0.5, 0.7])
    assert torch.equal(merged, dense)
    assert torch.allclose(merged, want)


def test_chunks_shrink_to_bound_memory_and_give_the_same_pixels(monkeypatch):
    torch.manual_seed(0)
    logits = torch.randn(5, 16, 16)
    whole = ops.upsample_mask_logits(logits, (37, 29), chunk=64)
    monkeypatch.setattr(ops, "UPSAMPLE_PIXELS", 2 * 37 * 29)
    steps = [(start, part.shape[0]) for start, part in ops.iter_upsampled_masks(logits, (37, 29))]
    assert steps == [(0, 2), (2, 2), (4, 1)]
    assert torch.equal(ops.upsample_mask_logits(logits, (37, 29), chunk=64), whole)


def _proposals(n=60, grid=16, seed=0):
    """Overlapping smooth blobs, some too small to survive downsampling to a tiny image."""
    g = torch.Generator().manual_seed(seed)
    logits = F.avg_pool2d(torch.randn(n, 1, grid, grid, generator=g), 5, 1, 2)[:, 0] * 6 - 0.5
    logits[:3] = -4.0
    logits[:3, 5, 5] = 3.0                          # a one-cell blob
    low = logits > 0
    feats = F.normalize(torch.randn(n, 8, generator=g), dim=1)
    feats = F.normalize(feats + torch.tensor([2.0] + [0.0] * 7), dim=1)   # all positive scores
    return Proposals(feats, torch.rand(n, generator=g), ops.masks_to_boxes_inclusive(low),
                     LogitMasks(logits, max_pixels=1000))


@pytest.mark.parametrize("way", ["runs", "bands"])
@pytest.mark.parametrize("size", [(5, 4), (16, 16), (41, 23), (90, 130)])
def test_streamed_matching_equals_dense_matching_exactly(size, way, monkeypatch):
    monkeypatch.setattr(mask_overlaps, "PRODUCTS_PER_RUN_STEP", 0 if way == "runs" else 1e9)
    monkeypatch.setattr(mask_overlaps, "BAND_ELEMENTS", 1000)
    monkeypatch.setattr(mask_overlaps, "PIXEL_BAND", 500)
    proposals = _proposals()
    every = torch.arange(len(proposals))
    empty_at_size = ~proposals.full_masks(every, size).flatten(1).any(dim=1)
    assert bool(empty_at_size.any()) == (size == (5, 4))    # none is empty at low resolution
    prototypes = F.normalize(torch.randn(3, 8, generator=torch.Generator().manual_seed(1)), dim=1)
    prototypes[0] = F.normalize(torch.tensor([1.0] + [0.0] * 7), dim=0)
    out = {}
    for mode in ("dense", "streamed"):
        matcher = ProposalMatcher(StageTimer(), nms_thresh=1.0, max_detections=25,
                                  full_mask_mode=mode)
        out[mode] = matcher(proposals, prototypes, *size)
    dense, streamed = out["dense"], out["streamed"]
    assert len(dense) > 0
    assert torch.equal(dense.pred_masks, streamed.pred_masks)
    assert torch.equal(dense.scores, streamed.scores)
    assert torch.equal(dense.pred_classes, streamed.pred_classes)
    assert torch.equal(dense.pred_boxes.tensor, streamed.pred_boxes.tensor)
    assert bool(dense.pred_masks.flatten(1).any(dim=1).all())     # empty masks were dropped


def test_auto_mode_holds_masks_at_once_only_on_cuda_under_the_budget():
    matcher = ProposalMatcher(StageTimer(), max_pixels=1000)
    assert not matcher._dense(10, (10, 10), torch.device("cpu"))
    assert matcher._dense(10, (10, 10), torch.device("cuda"))
    assert not matcher._dense(11, (10, 10), torch.device("cuda"))
    with pytest.raises(ValueError, match="full_mask_mode"):
        ProposalMatcher(StageTimer(), full_mask_mode="banded")


def test_train_net_predictions_do_not_depend_on_the_full_mask_pixel_budget(
        random_weights, synthetic, tmp_path):
    """One mask per upsampling chunk (budget 1 pixel) or all at once: the same predictions."""
    results = {}
    for budget in (1, 1 << 28):
        out = tmp_path / str(budget)
        run_train_net(random_weights, synthetic, out, "--eval-only", "MODEL.REFSEG.NMS_THRESH",
                      "1.0", "MODEL.REFSEG.FULL_MASKS.MAX_PIXELS", str(budget))
        results[budget] = predictions(out)
    assert len(results[1]) > 0
    assert results[1] == results[1 << 28]


@pytest.mark.parametrize("dedup_masks,mode", [("pooling", "dense"), ("full", "dense"),
                                              ("full", "streamed")])
@pytest.mark.parametrize("case", ["no proposals", "every score negative"])
def test_matcher_gives_empty_instances_when_nothing_is_kept(case, dedup_masks, mode):
    """A detector with no box, or every proposal dropped as negative: zero detections."""
    proposals = _proposals(n=0 if case == "no proposals" else 6)
    proposals.pooled_masks = torch.zeros(len(proposals), 0, dtype=torch.bool)
    prototypes = F.normalize(torch.tensor([[-1.0] + [0.0] * 7]), dim=1)    # every score < 0
    matcher = ProposalMatcher(StageTimer(), nms_thresh=0.5, max_detections=25,
                              dedup_masks=dedup_masks, full_mask_mode=mode,
                              negative_scores="drop")
    out = matcher(proposals, prototypes, 30, 40)
    assert len(out) == 0 and out.image_size == (30, 40)
    assert out.pred_masks.shape == (0, 30, 40) and out.pred_boxes.tensor.shape == (0, 4)
    assert out.scores.shape == (0,) and out.pred_classes.shape == (0,)
