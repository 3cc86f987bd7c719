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
import numpy as np
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


def dense_self_overlaps(masks):
    """
    The intra-class overlap function of :func:`semantic_soft_merge_overlaps` for masks held at
    full size (or on the pooling grid).

    Args:
        masks: (n, H, W) or (n, L) bool, n >= 0.
    Returns:
        a function idx (k,) int64 -> (k, k) float64 with [a, b] = |M_a ∩ M_b| / max(|M_a|, 1).
    """
    flat = masks.flatten(1)
    areas = flat.sum(dim=1).to(torch.float64)

    def ios(idx):
        return _pairwise_intersections(flat[idx]) / areas[idx].clamp(min=1.0)[:, None]

    return ios


def semantic_soft_merge_overlaps(overlaps, labels, features, scores, exponent=0.5):
    """
    Semantic-aware soft merging, given the overlaps of the masks. Masks are in ranking order
    (NMS order); within each class, mask a is decayed by the masks that come before it:

        ios_a = max_{b < a, same class} |M_a ∩ M_b| / |M_a| * max(0, f_a . f_b)
        score_a <- score_a * (1 - ios_a) ** exponent

    Comparisons use the original masks (no cascade). An empty mask gets ios 0 (the reference
    divides 0 by 0), and 1 - ios is clamped at 0 against rounding above 1.

    Args:
        overlaps: a function idx (k,) int64 -> (k, k) float64, [a, b] = |M_a ∩ M_b| / |M_a|
            of the masks idx (:func:`dense_self_overlaps`, or the run-length one of
            ``refseg_d2.modeling.mask_overlaps``); called once per class with >= 2 masks.
        labels: (n,) int64.
        features: (n, D) unit vectors (the pooled mask features).
        scores: (n,) float.
        exponent: float.
    Returns:
        (n,) decayed scores.
    """
    n = labels.shape[0]
    if n == 0:
        return scores.clone()
    decay = torch.zeros(n, dtype=torch.float64, device=scores.device)
    for label in torch.unique(labels).tolist():
        idx = torch.nonzero(labels == label, as_tuple=True)[0]
        if idx.numel() < 2:
            continue
        ios = torch.tril(overlaps(idx).to(decay.device), diagonal=-1)
        sim = (features[idx] @ features[idx].t()).clamp(min=0.0).to(torch.float64)
        decay[idx] = (ios * sim).amax(dim=1)
    factor = (1.0 - decay).clamp(min=0.0).pow(exponent).to(scores.dtype)
    return scores * factor


def select_top_k(scores, k):
    """
    Indices of the k highest scores, highest first, ties in input order (the final top-100).

    Args:
        scores: (n,).
    Returns:
        (min(n, k),) int64.
    """
    return torch.argsort(scores, descending=True, stable=True)[:k]


# Upper bound on the output pixels of one interpolation call (float32 intermediates of about
# 128 MB): a chunk of masks shrinks to this at large image sizes, down to one mask.
UPSAMPLE_PIXELS = 1 << 25


def iter_upsampled_masks(logits, size, chunk=64, antialias=True):
    """
    Bilinear upsampling (antialiased unless ``antialias`` is False) of low-resolution logits,
    thresholded at 0, a chunk of masks at a time. Every mask is interpolated on its own plane,
    so a mask's pixels do not depend on the chunk it is in.

    Args:
        logits: (n, h, w) float.
        size: (H, W) output size.
        chunk: at most this many masks per step (fewer when chunk * H * W > UPSAMPLE_PIXELS).
    Yields:
        (start, (c, H, W) bool): the masks start .. start + c - 1.
    """
    step = max(1, min(chunk, UPSAMPLE_PIXELS // max(1, size[0] * size[1])))
    for start in range(0, logits.shape[0], step):
        part = logits[start : start + step, None]
        up = F.interpolate(part, size=size, mode="bilinear", align_corners=False,
                           antialias=antialias)
        yield start, up[:, 0] > 0


def upsample_mask_logits(logits, size, chunk=64, antialias=True):
    """
    :func:`iter_upsampled_masks` gathered into one tensor.

    Returns:
        (n, H, W) bool.
    """
    out = torch.empty((logits.shape[0], size[0], size[1]), dtype=torch.bool, device=logits.device)
    for start, part in iter_upsampled_masks(logits, size, chunk, antialias):
        out[start : start + part.shape[0]] = part
    return out


def linear_resize_taps(src, dst):
    """
    The sampling of OpenCV's ``cv2.resize(..., INTER_LINEAR)`` along one axis of a float image
    from ``src`` to ``dst`` pixels: output d = in[i0[d]] * w0[d] + in[i1[d]] * w1[d], with
    cv2's source position (d + 0.5) * scale - 0.5 and its fraction computed in double, the
    weights rounded to float,
    clamped at both borders (weight 0 on the missing neighbour). cv2 switches to area
    averaging for an exact 2x reduction of both axes; :func:`linear_resize_masks` handles that.

    Returns:
        i0, i1 (dst,) int64 and w0, w1 (dst,) float32 tensors (CPU).
    """
    scale = 1.0 / (float(dst) / float(src))
    pos = (np.arange(dst, dtype=np.float64) + 0.5) * scale - 0.5
    i0 = np.floor(pos).astype(np.int64)
    frac = (pos - i0).astype(np.float32)
    low, high = i0 < 0, i0 >= src - 1
    frac[low | high] = 0.0
    i0 = np.clip(i0, 0, src - 1)
    i1 = np.minimum(i0 + 1, src - 1)
    w0 = (np.float32(1.0) - frac).astype(np.float32)
    return (torch.from_numpy(i0), torch.from_numpy(i1), torch.from_numpy(w0),
            torch.from_numpy(frac))


def linear_resize_masks(masks, grid):
    """
    Binary masks resized to ``grid`` = (gh, gw) the way ``cv2.resize(mask.astype(float32),
    (gw, gh)) > 0.5`` does it (bilinear taps of :func:`linear_resize_taps`, horizontal pass
    first, float32; area averaging for an exact 2x reduction of both axes).

    Args:
        masks: (n, H, W) bool.
    Returns:
        (n, gh, gw) bool.
    """
    n, height, width = masks.shape
    (gh, gw), dev = grid, masks.device
    if height == 2 * gh and width == 2 * gw:
        taps_y = _pair_taps(gh, dev)
        taps_x = _pair_taps(gw, dev)
    else:
        taps_y = [t.to(dev) for t in linear_resize_taps(height, gh)]
        taps_x = [t.to(dev) for t in linear_resize_taps(width, gw)]
    y0, y1, wy0, wy1 = taps_y
    x0, x1, wx0, wx1 = taps_x
    rows = masks.index_select(1, torch.cat((y0, y1))).to(torch.float32)
    across = rows[:, :, x0] * wx0 + rows[:, :, x1] * wx1
    down = across[:, :gh] * wy0[:, None] + across[:, gh:] * wy1[:, None]
    return down > 0.5


def _pair_taps(dst, device):
    """Area averaging of pixel pairs (2d, 2d + 1) written as linear taps of weight 1/2."""
    first = torch.arange(dst, device=device) * 2
    half = torch.full((dst,), 0.5, device=device)
    return first, first + 1, half, half
