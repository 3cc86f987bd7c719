"""
Full-resolution mask statistics in bounded memory: the kept proposals of a target are upsampled
a chunk at a time (the same interpolation as when all are upsampled at once, so the same
pixels), and each chunk is reduced to exact areas and run-length encodings before the next is
made. Soft merging then takes its intersections from the run-length encodings, and only the
final top-k masks are upsampled again, to be returned.

Every number equals the one computed from all masks at full size: areas and intersections are
integer pixel counts, and |A ∩ B| / |A| is one float64 division either way.

Run-length encodings are pycocotools' (compressed RLE dicts) of the mask's pixels in memory
order, i.e. of the (W, H) transposed image: areas and intersections do not depend on the order
in which pixels are listed, as long as every mask uses the same, and no copy is needed.
"""
import numpy as np
import torch
from pycocotools import mask as mask_util


def _runs_from_transitions(masks):
    """
    Uncompressed run lengths of flattened masks, computed on the masks' device.

    Args:
        masks: (c, L) bool.
    Returns:
        list of c lists of ints: alternating zero / one run lengths, starting with zeros
        (0 when the first pixel is set), as pycocotools' uncompressed RLE.
    """
    c, length = masks.shape
    changes = masks[:, 1:] != masks[:, :-1]
    rows, cols = torch.nonzero(changes, as_tuple=True)
    rows, cols = rows.cpu().numpy(), cols.cpu().numpy() + 1
    first = masks[:, 0].cpu().numpy()
    bounds = np.searchsorted(rows, np.arange(c + 1))
    runs = []
    for i in range(c):
        edges = np.concatenate(([0], cols[bounds[i] : bounds[i + 1]], [length]))
        lengths = np.diff(edges).tolist()
        runs.append(([0] if first[i] else []) + lengths)
    return runs


def encode_masks(masks):
    """
    Compressed RLEs of masks in memory order.

    Args:
        masks: (c, H, W) bool, contiguous, on any device.
    Returns:
        list of c pycocotools RLE dicts of size (W, H).
    """
    c, height, width = masks.shape
    if c == 0:
        return []
    if masks.device.type == "cpu":
        # (c, H, W) C-ordered is (W, H, c) Fortran-ordered, the layout pycocotools reads.
        return mask_util.encode(masks.contiguous().numpy().view(np.uint8).transpose(2, 1, 0))
    runs = _runs_from_transitions(masks.reshape(c, height * width))
    return [mask_util.frPyObjects({"size": [width, height], "counts": r}, width, height)
            for r in runs]


def rle_self_overlaps(rles):
    """
    The intra-class overlap function of ``ops.semantic_soft_merge_overlaps`` from RLEs.

    Args:
        rles: list of n RLE dicts of non-empty masks (:func:`encode_masks`).
    Returns:
        a function idx (k,) int64 -> (k, k) float64 with [a, b] = |M_a ∩ M_b| / |M_a|.
    """
    def ios(idx):
        part = [rles[i] for i in idx.tolist()]
        # iscrowd: pycocotools divides the intersection by the first mask's area.
        return torch.from_numpy(np.asarray(mask_util.iou(part, part, [1] * len(part)),
                                           dtype=np.float64))

    return ios


def streamed_mask_statistics(chunks, count):
    """
    Areas and RLEs of masks given a chunk at a time.

    Args:
        chunks: iterable of (start, (c, H, W) bool), as ``ops.iter_upsampled_masks`` yields.
        count (int): the number of masks.
    Returns:
        areas (count,) int64 on the masks' device, rles (list of count RLE dicts).
    """
    areas, rles = None, []
    for start, part in chunks:
        if areas is None:
            areas = torch.zeros(count, dtype=torch.int64, device=part.device)
        areas[start : start + part.shape[0]] = part.flatten(1).sum(dim=1)
        rles.extend(encode_masks(part))
    if areas is None:
        areas = torch.zeros(0, dtype=torch.int64)
    return areas, rles
