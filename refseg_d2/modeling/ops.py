"""
The formulas of the method, as pure tensor functions (no state, no Python loops over masks or
pixels). Each reproduces the authors' code exactly on normal inputs; the only differences are
guards against NaN on degenerate inputs, which those inputs would otherwise turn into crashes
or undefined orderings.

Shape shorthand in this module:
    P: number of point prompts
    N: number of candidate masks
    C: number of classes
    D: feature dimension
    h, w: low-resolution mask grid (256 x 256 for a 1024 SAM 2 input)
    H, W: original image size
"""
import torch
import torch.nn.functional as F
from torchvision.ops import batched_nms


def point_grid(points_per_side, image_size):
    """
    The prompt grid of the reference: ``points_per_side`` values from 0 to image_size - 1
    (edges included) shifted by +0.5, all (x, y) pairs with x varying slowest.

    Returns:
        Tensor (P, 2) float32: (x, y) pixel coordinates in the SAM 2 input frame, on CPU.
    """
    values = torch.linspace(0, image_size - 1, points_per_side)
    xs, ys = torch.meshgrid(values, values, indexing="ij")
    return torch.stack((xs.reshape(-1), ys.reshape(-1)), dim=-1) + 0.5


def select_best_multimask(mask_logits, pred_ious):
    """
    Keep, for every prompt, the multimask output with the highest predicted IoU.

    Args:
        mask_logits: (P, 3, h, w) the three multimask outputs (SAM tokens 1-3).
        pred_ious: (P, 3) their predicted IoUs.
    Returns:
        (P, h, w) logits and (P,) predicted IoUs of the chosen outputs.
    """
    best = pred_ious.argmax(dim=1)
    rows = torch.arange(pred_ious.shape[0], device=pred_ious.device)
    return mask_logits[rows, best], pred_ious[rows, best]


def masked_average_features(masks, features):
    """
    L2-normalised mean feature inside each mask.

    Args:
        masks: (N, L) bool, L = h * w.
        features: (L, D) features on the same grid.
    Returns:
        (N, D). An empty mask gives the zero vector (the reference gives NaN; both are
        dropped later by the positive-score filter).
    """
    weights = masks.to(features.dtype)
    area = weights.sum(dim=1, keepdim=True)
    pooled = (weights @ features) / area.clamp(min=1.0)
    return F.normalize(pooled, p=2, dim=-1)


def soft_masked_average(features, weights):
    """
    Soft-mask-weighted mean of reference features (an instance prototype).

    Args:
        features: (R, L, D) patch features.
        weights: (R, L) soft mask values in [0, 1] on the patch grid.
    Returns:
        (R, D) the weighted means (not normalised) and (R,) bool, False where the weights sum
        to zero (such an instance has no prototype).
    """
    total = weights.sum(dim=1)
    valid = total > 0
    means = torch.einsum("rl,rld->rd", weights, features) / total.clamp(min=1e-12)[:, None]
    return means, valid


def class_prototypes(instance_features, counts):
    """
    Class prototypes: the normalised mean of each class's instance means.

    Args:
        instance_features: (C, K, D), slots at and beyond counts[c] are ignored.
        counts: (C,) number of filled slots per class (each >= 1).
    Returns:
        (C, D) unit vectors.
    """
    slots = torch.arange(instance_features.shape[1], device=counts.device)
    filled = (slots[None, :] < counts[:, None]).to(instance_features.dtype)
    summed = (instance_features * filled[..., None]).sum(dim=1)
    mean = summed / counts.clamp(min=1)[:, None].to(instance_features.dtype)
    return F.normalize(mean, p=2, dim=-1)


def classify(features, prototypes):
    """
    Cosine similarity to every prototype, clamped at 0; the best class wins.

    Args:
        features: (N, D) unit vectors.
        prototypes: (C, D) unit vectors.
    Returns:
        scores (N,) in [0, 1], labels (N,) int64.
    """
    similarity = (features @ prototypes.t()).clamp(min=0.0)
    scores, labels = similarity.topk(1, dim=1)
    return scores[:, 0], labels[:, 0]


def masks_to_boxes_inclusive(masks):
    """
    Tight boxes of binary masks with inclusive max indices, as SAM's ``batched_mask_to_box``:
    a mask covering only pixel (x=3, y=5) gives (3, 5, 3, 5).

    Args:
        masks: (N, H, W) bool.
    Returns:
        (N, 4) int64 (x0, y0, x1, y1); all zeros for an empty mask.
    """
    n, height, width = masks.shape
    if n == 0:
        return torch.zeros((0, 4), dtype=torch.int64, device=masks.device)
    rows = masks.any(dim=2)
    cols = masks.any(dim=1)
    ys = torch.arange(height, device=masks.device)
    xs = torch.arange(width, device=masks.device)
    y1 = torch.where(rows, ys, -1).amax(dim=1)
    x1 = torch.where(cols, xs, -1).amax(dim=1)
    y0 = torch.where(rows, ys, height).amin(dim=1)
    x0 = torch.where(cols, xs, width).amin(dim=1)
    boxes = torch.stack((x0, y0, x1, y1), dim=1)
    empty = ~rows.any(dim=1)
    return torch.where(empty[:, None], torch.zeros_like(boxes), boxes)


def class_aware_nms(boxes, ranking_scores, labels, iou_threshold, max_keep):
    """
    Per-class NMS ranked by ``ranking_scores`` (SAM 2's predicted IoU in the method).

    Args:
        boxes: (N, 4) xyxy.
        ranking_scores: (N,).
        labels: (N,) int64.
        iou_threshold: float.
        max_keep: int, cap on the number of kept boxes.
    Returns:
        (M,) int64 kept indices in decreasing ranking-score order, M <= max_keep.
    """
    keep = batched_nms(boxes.float(), ranking_scores, labels, iou_threshold)
    return keep[:max_keep]


def _pairwise_intersections(masks, pixel_chunk=1 << 22):
    """
    |M_a ∩ M_b| for all pairs, exact (float64 accumulation of chunk-wise products).

    Args:
        masks: (n, L) bool.
    Returns:
        (n, n) float64.
    """
    n, length = masks.shape
    step = max(1, min(length, pixel_chunk // max(n, 1)))
    out = torch.zeros((n, n), dtype=torch.float64, device=masks.device)
    for start in range(0, length, step):
        part = masks[:, start : start + step].to(torch.float32)
        out += (part @ part.t()).to(torch.float64)
    return out


def semantic_soft_merge(masks, labels, features, scores, exponent=0.5):
    """
    Semantic-aware soft merging. Masks are given in ranking order (NMS order); within each
    class, mask a is decayed by the masks that come before it:

        ios_a = max_{b < a, same class} |M_a ∩ M_b| / |M_a| * max(0, f_a . f_b)
        score_a <- score_a * (1 - ios_a) ** exponent

    Comparisons use the original masks (no cascade). An empty mask gets ios 0 (the reference
    divides 0 by 0), and 1 - ios is clamped at 0 against rounding above 1.

    Args:
        masks: (n, H, W) bool at the original resolution.
        labels: (n,) int64.
        features: (n, D) unit vectors (the pooled mask features).
        scores: (n,) float.
        exponent: float.
    Returns:
        (n,) decayed scores.
    """
    n = masks.shape[0]
    if n == 0:
        return scores.clone()
    flat = masks.reshape(n, -1)
    areas = flat.sum(dim=1).to(torch.float64)
    decay = torch.zeros(n, dtype=torch.float64, device=scores.device)
    for label in torch.unique(labels).tolist():
        idx = torch.nonzero(labels == label, as_tuple=True)[0]
        if idx.numel() < 2:
            continue
        inter = torch.tril(_pairwise_intersections(flat[idx]), diagonal=-1)
        ios = inter / areas[idx].clamp(min=1.0)[:, None]
        sim = (features[idx] @ features[idx].t()).clamp(min=0.0).to(torch.float64)
        decay[idx] = (ios * sim).amax(dim=1)
    factor = (1.0 - decay).clamp(min=0.0).pow(exponent).to(scores.dtype)
    return scores * factor


def select_top_k(scores, k):
    """
    Indices of the k highest scores, highest first (the final top-100 of the method).

    Args:
        scores: (n,).
    Returns:
        (min(n, k),) int64.
    """
    return torch.argsort(scores, descending=True)[:k]


def upsample_mask_logits(logits, size, chunk=64):
    """
    Bilinear, antialiased upsampling of low-resolution logits, thresholded at 0.

    Args:
        logits: (n, h, w) float.
        size: (H, W) output size.
        chunk: masks interpolated at a time (bounds peak memory).
    Returns:
        (n, H, W) bool.
    """
    out = torch.empty((logits.shape[0], size[0], size[1]), dtype=torch.bool, device=logits.device)
    for start in range(0, logits.shape[0], chunk):
        part = logits[start : start + chunk, None]
        up = F.interpolate(part, size=size, mode="bilinear", align_corners=False, antialias=True)
        out[start : start + chunk] = up[:, 0] > 0
    return out
