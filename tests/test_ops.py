"""Unit tests of the method's formulas, with hand-computed expectations."""
import math

import pytest
import torch
import torch.nn.functional as F

from refseg_d2.modeling import ops


def test_point_grid_includes_edges_and_varies_x_slowest():
    grid = ops.point_grid(3, 5)
    expected = torch.tensor(
        [[0.5, 0.5], [0.5, 2.5], [0.5, 4.5],
         [2.5, 0.5], [2.5, 2.5], [2.5, 4.5],
         [4.5, 0.5], [4.5, 2.5], [4.5, 4.5]]
    )
    assert torch.equal(grid, expected)


def test_point_grid_of_the_paper_spans_half_to_1023_5():
    grid = ops.point_grid(32, 1024)
    assert grid.shape == (1024, 2)
    assert grid[0].tolist() == [0.5, 0.5]
    assert grid[-1].tolist() == [1023.5, 1023.5]
    assert grid[1, 1].item() == pytest.approx(1023 / 31 + 0.5, abs=1e-4)
    assert grid[32, 0].item() == pytest.approx(1023 / 31 + 0.5, abs=1e-4)


def test_select_best_multimask_takes_highest_predicted_iou_per_prompt():
    logits = torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).reshape(2, 3, 2, 2)
    ious = torch.tensor([[0.1, 0.7, 0.3], [0.9, 0.2, 0.95]])
    masks, best = ops.select_best_multimask(logits, ious)
    assert best.tolist() == pytest.approx([0.7, 0.95])
    assert torch.equal(masks[0], logits[0, 1])
    assert torch.equal(masks[1], logits[1, 2])


def test_masked_average_features_is_normalised_mean_inside_mask():
    features = torch.tensor([[1.0, 0.0], [3.0, 4.0], [0.0, 2.0], [10.0, 10.0]])
    masks = torch.tensor([[True, True, False, False], [False, False, True, False]])
    out = ops.masked_average_features(masks, features)
    # mean of rows 0 and 1 = (2, 2) -> (1/sqrt2, 1/sqrt2); row 2 alone -> (0, 1)
    assert torch.allclose(out, torch.tensor([[1 / math.sqrt(2), 1 / math.sqrt(2)], [0.0, 1.0]]))


def test_masked_average_features_of_empty_mask_is_zero_not_nan():
    out = ops.masked_average_features(torch.zeros((1, 3), dtype=torch.bool), torch.ones((3, 2)))
    assert torch.equal(out, torch.zeros((1, 2)))


def test_soft_masked_average_weights_patches_by_soft_mask():
    features = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [5.0, 5.0]]])
    weights = torch.tensor([[0.25, 0.75, 0.0]])
    means, valid = ops.soft_masked_average(features, weights)
    assert torch.allclose(means, torch.tensor([[0.25, 0.75]]))
    assert valid.tolist() == [True]
    _, valid = ops.soft_masked_average(features, torch.zeros((1, 3)))
    assert valid.tolist() == [False]


def test_class_prototypes_normalise_the_mean_of_unnormalised_instance_means():
    inst = torch.tensor(
        [[[2.0, 0.0], [0.0, 4.0]],     # class 0: two shots -> mean (1, 2)
         [[0.0, 3.0], [99.0, 99.0]]]   # class 1: one shot, slot 1 unused
    )
    protos = ops.class_prototypes(inst, torch.tensor([2, 1]))
    assert torch.allclose(protos[0], torch.tensor([1.0, 2.0]) / math.sqrt(5))
    assert torch.allclose(protos[1], torch.tensor([0.0, 1.0]))


def test_classify_clamps_negative_cosines_and_takes_argmax():
    protos = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    feats = torch.tensor([[0.6, 0.8], [-1.0, 0.0], [0.8, -0.6]])
    scores, labels = ops.classify(feats, protos)
    assert scores.tolist() == pytest.approx([0.8, 0.0, 0.8])
    assert labels[0].item() == 1 and labels[2].item() == 0


def test_masks_to_boxes_inclusive_max_indices_and_empty_masks():
    masks = torch.zeros((3, 8, 6), dtype=torch.bool)
    masks[0, 5, 3] = True
    masks[1, 2:5, 1:4] = True
    boxes = ops.masks_to_boxes_inclusive(masks)
    assert boxes.tolist() == [[3, 5, 3, 5], [1, 2, 3, 4], [0, 0, 0, 0]]
    assert boxes.dtype == torch.int64


def test_class_aware_nms_ranks_by_predicted_iou_and_keeps_other_classes():
    boxes = torch.tensor([[0, 0, 10, 10], [0, 0, 10, 9], [0, 0, 10, 10], [50, 50, 60, 60]])
    pred_ious = torch.tensor([0.5, 0.9, 0.7, 0.6])
    labels = torch.tensor([0, 0, 1, 0])
    keep = ops.class_aware_nms(boxes, pred_ious, labels, 0.5, max_keep=10)
    # box 1 (IoU .9) suppresses box 0 of the same class; box 2 has another class
    assert keep.tolist() == [1, 2, 3]
    assert ops.class_aware_nms(boxes, pred_ious, labels, 0.5, max_keep=2).tolist() == [1, 2]


def _masks(shape, *regions):
    out = torch.zeros((len(regions),) + shape, dtype=torch.bool)
    for i, (y0, y1, x0, x1) in enumerate(regions):
        out[i, y0:y1, x0:x1] = True
    return out


def _soft_merge(masks, labels, features, scores, exponent=0.5):
    """The soft merging of masks held at full size, as the matcher runs it."""
    return ops.semantic_soft_merge_overlaps(ops.dense_self_overlaps(masks), labels, features,
                                            scores, exponent)


def test_soft_merge_worked_example():
    # A: 4x4 = 16 px; B: 2x4 = 8 px inside A; C: same place as B but another class.
    masks = _masks((6, 6), (0, 4, 0, 4), (0, 2, 0, 4), (0, 2, 0, 4))
    labels = torch.tensor([0, 0, 1])
    feats = F.normalize(torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.6, 0.8]]), dim=1)
    scores = torch.tensor([0.9, 0.8, 0.7])
    out = _soft_merge(masks, labels, feats, scores, exponent=0.5)
    # B: IoS = 8/8 = 1, cos(A, B) = 0.6 -> 0.8 * sqrt(1 - 0.6); A (first) and C (alone) unchanged
    assert out.tolist() == pytest.approx([0.9, 0.8 * math.sqrt(0.4), 0.7], abs=1e-6)


def test_soft_merge_uses_ios_of_the_later_mask_only_and_does_not_cascade():
    # order: small S (4 px) first, then big L (16 px) containing it, then T = S again
    masks = _masks((4, 4), (0, 2, 0, 2), (0, 4, 0, 4), (0, 2, 0, 2))
    labels = torch.zeros(3, dtype=torch.int64)
    feats = torch.tensor([[1.0, 0.0]] * 3)
    scores = torch.tensor([0.5, 0.6, 0.4])
    out = _soft_merge(masks, labels, feats, scores)
    # L: IoS vs S = 4/16 -> 0.6 * sqrt(0.75); T: max(IoS vs S = 1, vs L = 1) -> 0
    assert out.tolist() == pytest.approx([0.5, 0.6 * math.sqrt(0.75), 0.0], abs=1e-6)


def test_soft_merge_never_produces_nan_for_empty_masks():
    masks = _masks((4, 4), (0, 2, 0, 2), (0, 0, 0, 0))
    out = _soft_merge(masks, torch.zeros(2, dtype=torch.int64),
                      torch.tensor([[1.0, 0.0]] * 2), torch.tensor([0.5, 0.4]))
    assert not torch.isnan(out).any()


def test_upsample_mask_logits_matches_antialiased_bilinear_in_chunks():
    logits = torch.randn(5, 8, 8)
    out = ops.upsample_mask_logits(logits, (13, 21), chunk=2)
    expected = F.interpolate(logits[:, None], (13, 21), mode="bilinear", align_corners=False,
                             antialias=True)[:, 0] > 0
    assert out.dtype == torch.bool and torch.equal(out, expected)
    small = ops.upsample_mask_logits(torch.randn(2, 8, 8), (5, 3))
    assert small.shape == (2, 5, 3)


def test_select_top_k_keeps_the_highest_scores_in_order():
    scores = torch.tensor([0.2, 0.9, 0.5, 0.7])
    assert ops.select_top_k(scores, 2).tolist() == [1, 3]
    assert ops.select_top_k(scores, 10).tolist() == [1, 3, 2, 0]
