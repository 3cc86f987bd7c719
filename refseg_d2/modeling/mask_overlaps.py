"""
Full-resolution mask statistics in bounded memory. The kept proposals of a target are upsampled
a chunk at a time (the same interpolation as when all are upsampled at once, so the same
pixels); each chunk is reduced to its runs of set pixels before the next one is made
(:class:`MaskRuns`). Soft merging takes its intersections from the runs, and only the final
top-k masks are upsampled again, to be returned.

Every number equals the one computed from all masks at full size: areas and intersections are
exact integer pixel counts, and |A ∩ B| / |A| is one float64 division either way.

Intersections are counted in one of two ways, per class, whichever is cheaper:
- run merging (pycocotools' RLE intersection, C code on the CPU), cost ~ pairs x runs;
- products of the masks decoded from the runs, on segments (spans of pixels where no mask of
  the class starts or ends a run, weighted by their length) a band at a time, cost ~ pairs x
  segments (at most pixels), which a GPU does far faster; always used on CUDA.

Shape shorthand: n masks of H x W, L = H * W pixels in row-major order, R runs.
"""
import numpy as np
import torch
import torch.nn.functional as F
from pycocotools import mask as mask_util

# Segment products per run-merge step at which both ways of counting cost the same on a CPU
# (measured on this project's 2-core AVX-512 machine; only speed depends on it).
PRODUCTS_PER_RUN_STEP = 160
# Elements of one decoded band of masks (float32: 32 MB).
BAND_ELEMENTS = 1 << 23
# Longest segment and widest band in pixels: products of 0/1 by segment lengths then sum to
# integers below 2^24 per band, which float32 holds exactly.
SEGMENT_PIXELS = 1 << 23
BAND_PIXEL_SPAN = 1 << 24


class MaskRuns:
    """
    The runs of set pixels of n masks, in row-major pixel order.

    Attributes:
        size: (H, W).
        areas: (n,) int64 pixel counts.
        owner: (R,) int64 index of each run's mask; runs are sorted by mask, then position.
        starts, ends: (R,) int64 first and one-past-last flat pixel of each run.
    """

    def __init__(self, size, areas, owner, starts, ends):
        self.size = tuple(size)
        self.areas = areas
        self.owner = owner
        self.starts = starts
        self.ends = ends

    def __len__(self):
        return self.areas.shape[0]

    @property
    def num_pixels(self):
        return self.size[0] * self.size[1]

    @classmethod
    def from_chunks(cls, chunks, count, size):
        """
        Args:
            chunks: iterable of (start, (c, H, W) bool), as ``ops.iter_upsampled_masks`` yields.
            count (int): n, the number of masks.
            size: (H, W).
        """
        areas = torch.zeros(count, dtype=torch.int64)
        owner, starts, ends = [], [], []
        for first, part in chunks:
            c = part.shape[0]
            if c == 0:
                continue
            flat = F.pad(part.reshape(c, -1), (1, 1))   # clear pixels around every mask
            rows, where = torch.nonzero(flat[:, 1:] != flat[:, :-1], as_tuple=True)
            # Changes alternate start / one-past-end within each mask, in order.
            rows, begin, end = rows[0::2], where[0::2], where[1::2]
            areas = areas.to(part.device)
            areas[first : first + c] = part.reshape(c, -1).sum(dim=1)
            owner.append(rows + first)
            starts.append(begin)
            ends.append(end)
        device = areas.device
        cat = (lambda xs: torch.cat(xs) if xs else torch.zeros(0, dtype=torch.int64, device=device))
        return cls(size, areas, cat(owner), cat(starts), cat(ends))

    def subset(self, keep):
        """The runs of the masks ``keep`` ((n,) bool), renumbered in order."""
        new_index = torch.cumsum(keep.to(torch.int64), dim=0) - 1
        selected = keep[self.owner]
        return MaskRuns(self.size, self.areas[keep], new_index[self.owner[selected]],
                        self.starts[selected], self.ends[selected])

    def run_counts(self):
        """(n,) int64 number of runs of each mask."""
        return torch.bincount(self.owner, minlength=len(self))

    def to_rles(self, idx):
        """
        pycocotools RLEs of the masks ``idx``: the row-major pixel order is the column-major
        order of the (W, H) transposed image, hence their size (W, H).
        """
        height, width = self.size
        member = torch.zeros(len(self), dtype=torch.bool, device=self.owner.device)
        member[idx] = True
        sel = member[self.owner]
        owner = self.owner[sel].cpu().numpy()
        starts, ends = self.starts[sel].cpu().numpy(), self.ends[sel].cpu().numpy()
        first = np.ones(len(owner), dtype=bool)
        first[1:] = owner[1:] != owner[:-1]
        previous_end = np.concatenate(([0], ends[:-1]))
        previous_end[first] = 0
        pairs = np.stack((starts - previous_end, ends - starts), axis=1).ravel()
        bounds = np.searchsorted(owner, idx.cpu().numpy())
        limits = np.searchsorted(owner, idx.cpu().numpy(), side="right")
        rles = []
        for lo, hi in zip(bounds, limits):
            tail = self.num_pixels - (int(ends[hi - 1]) if hi > lo else 0)
            counts = pairs[2 * lo : 2 * hi].tolist() + ([tail] if tail or hi == lo else [])
            rles.append(mask_util.frPyObjects({"size": [width, height], "counts": counts},
                                              width, height))
        return rles

    def segments(self, idx):
        """
        The pixel axis of the masks ``idx`` compressed to segments: maximal spans of pixels
        where none of them starts or ends a run (so every mask is all set or all clear on a
        segment), each at most SEGMENT_PIXELS long.

        Returns:
            edges (S + 1,) int64 increasing flat pixel positions (segment j is
            [edges[j], edges[j + 1])); rows, first, last (R',) int64: each run of a mask of
            ``idx`` as (its row in ``idx``, its first segment, one past its last segment).
        """
        device = self.owner.device
        row_of = torch.full((len(self),), -1, dtype=torch.int64, device=device)
        row_of[idx] = torch.arange(idx.shape[0], device=device)
        rows = row_of[self.owner]
        sel = rows >= 0
        rows, starts, ends = rows[sel], self.starts[sel], self.ends[sel]
        cuts = torch.arange(0, self.num_pixels, SEGMENT_PIXELS, device=device)
        edges = torch.unique(torch.cat((starts, ends, cuts, cuts.new_tensor([self.num_pixels]))))
        return (edges, rows, torch.searchsorted(edges, starts), torch.searchsorted(edges, ends))

    def decoded_bands(self, idx, band_elements):
        """
        The masks ``idx`` (m,) decoded on their segments (:meth:`segments`), a band of
        segments at a time: at most ``band_elements`` / m segments and at most 2^24 pixels.

        Yields:
            (m, b) bool whether each mask covers each segment of the band, and (b,) int64 the
            segments' pixel counts; bands in pixel order, together covering every pixel.
        """
        edges, rows, first, last = self.segments(idx)
        num_segments = edges.shape[0] - 1
        columns = max(1, band_elements // max(1, idx.shape[0]))
        # Band boundaries (segment indices): every `columns` segments and at every 2^24 pixels.
        spans = torch.searchsorted(edges, torch.arange(
            0, self.num_pixels, BAND_PIXEL_SPAN, device=edges.device)).tolist() + [num_segments]
        bounds = sorted({b for lo, hi in zip(spans[:-1], spans[1:])
                         for b in range(lo, hi, columns)} | {num_segments})
        bounds_t = torch.tensor(bounds, dtype=torch.int64, device=edges.device)
        # Split runs at band boundaries, so that each piece lies in one band.
        first_band = torch.searchsorted(bounds_t, first, right=True) - 1
        last_band = torch.searchsorted(bounds_t, last - 1, right=True) - 1
        pieces = last_band - first_band + 1
        run = torch.repeat_interleave(torch.arange(rows.shape[0], device=rows.device), pieces)
        band = first_band[run] + torch.arange(run.shape[0], device=rows.device) - (
            torch.repeat_interleave(torch.cumsum(pieces, dim=0) - pieces, pieces))
        lo = torch.maximum(first[run], bounds_t[band]) - bounds_t[band]
        hi = torch.minimum(last[run], bounds_t[band + 1]) - bounds_t[band]
        order = torch.argsort(band, stable=True)
        band, lo, hi, rows = band[order], lo[order], hi[order], rows[run][order]
        split = torch.searchsorted(band, torch.arange(len(bounds), device=band.device)).tolist()
        weights = edges[1:] - edges[:-1]
        for b in range(len(bounds) - 1):
            width = bounds[b + 1] - bounds[b]
            delta = torch.zeros((idx.shape[0], width + 1), dtype=torch.int16, device=rows.device)
            part = slice(split[b], split[b + 1])
            ones = torch.ones(split[b + 1] - split[b], dtype=torch.int16, device=rows.device)
            delta.index_put_((rows[part], lo[part]), ones, accumulate=True)
            delta.index_put_((rows[part], hi[part]), -ones, accumulate=True)
            covered = torch.cumsum(delta[:, :width], dim=1, dtype=torch.int16) > 0
            yield covered, weights[bounds[b] : bounds[b + 1]]


def _banded_intersections(runs, idx):
    """(m, m) float64 |M_a ∩ M_b| of the masks ``idx`` from products of decoded bands."""
    m = idx.shape[0]
    out = torch.zeros((m, m), dtype=torch.float64, device=runs.owner.device)
    for covered, weights in runs.decoded_bands(idx, BAND_ELEMENTS):
        part = covered.to(torch.float32)
        # Integers: segment weights <= 2^23 and per-band sums <= 2^24 are exact in float32.
        out += ((part * weights.to(torch.float32)) @ part.t()).to(torch.float64)
    return out


def _rle_intersections_over_area(runs, idx):
    """(m, m) float64 [a, b] = |M_a ∩ M_b| / |M_a| by pycocotools' run merging."""
    rles = runs.to_rles(idx)
    # iscrowd: pycocotools divides the intersection by the first mask's area.
    ios = mask_util.iou(rles, rles, [1] * len(rles))
    return torch.from_numpy(np.asarray(ios, dtype=np.float64)).to(runs.owner.device)


def run_self_overlaps(runs):
    """
    The intra-class overlap function of ``ops.semantic_soft_merge_overlaps`` from runs.

    Args:
        runs (MaskRuns): of non-empty masks.
    Returns:
        a function idx (k,) int64 -> (k, k) float64 with [a, b] = |M_a ∩ M_b| / |M_a|.
    """
    run_counts = runs.run_counts()
    on_cuda = runs.owner.device.type == "cuda"

    def ios(idx):
        k = idx.shape[0]
        class_runs = int(run_counts[idx].sum())
        merge_steps = 2 * (k - 1) * class_runs
        products = k * k * min(runs.num_pixels, 2 * class_runs + 1)
        if on_cuda or products < PRODUCTS_PER_RUN_STEP * merge_steps:
            areas = runs.areas[idx].to(torch.float64)
            return _banded_intersections(runs, idx) / areas.clamp(min=1.0)[:, None]
        return _rle_intersections_over_area(runs, idx)

    return ios
