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
  the class starts or ends a run, weighted by their length), cost ~ pairs x segments (at most
  pixels), which a GPU does far faster; always used on CUDA.

Runs are stored split at fixed pixel bands (PIXEL_BAND pixels, a few hundred rows), band by
band, so that all work after the upsampling touches one band's runs at a time: memory beyond
the runs themselves is bounded whatever the image size.

Shape shorthand: n masks of H x W, L = H * W pixels in row-major order, R runs.
"""
import numpy as np
import torch
from pycocotools import mask as mask_util

# Segment products per run-merge step at which both ways of counting cost the same on a CPU
# (measured on this project's 2-core AVX-512 machine; only speed depends on it).
PRODUCTS_PER_RUN_STEP = 160
# Elements of one decoded band of masks (float32: 32 MB).
BAND_ELEMENTS = 1 << 23
# Pixels of one band of runs. Products of 0/1 by segment lengths then sum to integers of at
# most 2^22 per band, which float32 holds exactly.
PIXEL_BAND = 1 << 22


class MaskRuns:
    """
    The runs of set pixels of n masks, in row-major pixel order, split at pixel bands.

    Attributes:
        size: (H, W).
        areas: (n,) int64 pixel counts.
        bands: one (owner, starts, ends) per band of PIXEL_BAND pixels: (R_b,) the mask index,
            first pixel and one-past-last pixel (flat, absolute) of each run in the band,
            sorted by mask then position.
    """

    def __init__(self, size, areas, bands):
        self.size = tuple(size)
        self.areas = areas
        self.bands = bands

    def __len__(self):
        return self.areas.shape[0]

    @property
    def num_pixels(self):
        return self.size[0] * self.size[1]

    @classmethod
    def from_chunks(cls, chunks, count, size):
        """
        Args:
            chunks: iterable of (start, (c, H, W) bool), as ``ops.iter_upsampled_masks`` yields,
                in mask order.
            count (int): n, the number of masks.
            size: (H, W).
        """
        num_pixels = size[0] * size[1]
        num_bands = max(1, -(-num_pixels // PIXEL_BAND))
        dtype = torch.int32 if num_pixels < 2 ** 31 else torch.int64
        areas = torch.zeros(count, dtype=torch.int64)
        parts = [[] for _ in range(num_bands)]
        for first, part in chunks:
            c = part.shape[0]
            if c == 0:
                continue
            rows, begin, end = _runs_of(part.reshape(c, -1))
            areas = areas.to(part.device)
            areas[first : first + c] = torch.zeros(c, dtype=torch.int64, device=part.device) \
                .index_add_(0, rows, end - begin)
            rows = rows + first
            band, rows, begin, end = _split_at(PIXEL_BAND, rows, begin, end)
            order = torch.argsort(band, stable=True)
            band, rows, begin, end = band[order], rows[order], begin[order], end[order]
            edges = torch.searchsorted(band, torch.arange(num_bands + 1, device=band.device))
            for b, (lo, hi) in enumerate(zip(edges[:-1].tolist(), edges[1:].tolist())):
                if hi > lo:
                    parts[b].append((rows[lo:hi].to(dtype), begin[lo:hi].to(dtype),
                                     end[lo:hi].to(dtype)))
        device = areas.device
        empty = torch.zeros(0, dtype=dtype, device=device)
        bands = [tuple(torch.cat(xs) for xs in zip(*p)) if p else (empty, empty, empty)
                 for p in parts]
        return cls(size, areas, bands)

    def subset(self, keep):
        """The runs of the masks ``keep`` ((n,) bool), renumbered in order."""
        new_index = torch.cumsum(keep.to(torch.int64), dim=0) - 1
        bands = []
        for owner, starts, ends in self.bands:
            sel = keep[owner.long()]
            bands.append((new_index[owner[sel].long()].to(owner.dtype), starts[sel], ends[sel]))
        return MaskRuns(self.size, self.areas[keep], bands)

    def run_counts(self):
        """(n,) int64 number of runs (pieces split at bands) of each mask."""
        counts = torch.zeros(len(self), dtype=torch.int64, device=self.areas.device)
        for owner, _, _ in self.bands:
            counts += torch.bincount(owner.long(), minlength=len(self))
        return counts

    def _band_members(self, idx):
        """Per band: (rows in ``idx`` (R',) int64, starts, ends) of the runs of masks ``idx``."""
        row_of = torch.full((len(self),), -1, dtype=torch.int64, device=self.areas.device)
        row_of[idx] = torch.arange(idx.shape[0], device=self.areas.device)
        for owner, starts, ends in self.bands:
            rows = row_of[owner.long()]
            sel = rows >= 0
            yield rows[sel], starts[sel].long(), ends[sel].long()

    def to_rles(self, idx):
        """
        pycocotools RLEs of the masks ``idx``: the row-major pixel order is the column-major
        order of the (W, H) transposed image, hence their size (W, H).
        """
        height, width = self.size
        pieces = [[] for _ in range(idx.shape[0])]
        for rows, starts, ends in self._band_members(idx):
            order = torch.argsort(rows, stable=True)
            rows, starts, ends = rows[order], starts[order].cpu(), ends[order].cpu()
            bounds = torch.searchsorted(rows, torch.arange(idx.shape[0] + 1, device=rows.device))
            for i, (lo, hi) in enumerate(zip(bounds[:-1].tolist(), bounds[1:].tolist())):
                if hi > lo:
                    pieces[i].append((starts[lo:hi], ends[lo:hi]))
        rles = []
        for mask_pieces in pieces:
            counts = _run_lengths(mask_pieces, self.num_pixels)
            rles.append(mask_util.frPyObjects({"size": [width, height], "counts": counts},
                                              width, height))
        return rles

    def decoded_bands(self, idx, band_elements):
        """
        The masks ``idx`` (m,) decoded on segments: per pixel band, maximal spans of pixels
        where none of them starts or ends a run (so each mask is all set or all clear on a
        segment), at most ``band_elements`` / m segments at a time.

        Yields:
            (m, b) bool whether each mask covers each segment, and (b,) int64 the segments'
            pixel counts; in pixel order, together covering every pixel once.
        """
        m = idx.shape[0]
        columns = max(1, band_elements // max(1, m))
        device = self.areas.device
        for b, (rows, starts, ends) in enumerate(self._band_members(idx)):
            lo_pixel = b * PIXEL_BAND
            hi_pixel = min(self.num_pixels, lo_pixel + PIXEL_BAND)
            bounds = torch.tensor([lo_pixel, hi_pixel], dtype=torch.int64, device=device)
            edges = torch.unique(torch.cat((starts, ends, bounds)))
            first = torch.searchsorted(edges, starts)
            last = torch.searchsorted(edges, ends)
            weights = edges[1:] - edges[:-1]
            chunk, rows, first, last = _split_at(columns, rows, first, last)
            order = torch.argsort(chunk, stable=True)
            chunk, rows, first, last = chunk[order], rows[order], first[order], last[order]
            num_chunks = -(-weights.shape[0] // columns)
            split = torch.searchsorted(chunk, torch.arange(num_chunks + 1, device=device)).tolist()
            for c in range(num_chunks):
                width = min(columns, weights.shape[0] - c * columns)
                part = slice(split[c], split[c + 1])
                delta = torch.zeros((m, width + 1), dtype=torch.int16, device=device)
                ones = torch.ones(split[c + 1] - split[c], dtype=torch.int16, device=device)
                delta.index_put_((rows[part], first[part] - c * columns), ones, accumulate=True)
                delta.index_put_((rows[part], last[part] - c * columns), -ones, accumulate=True)
                covered = torch.cumsum(delta[:, :width], dim=1, dtype=torch.int16) > 0
                yield covered, weights[c * columns : c * columns + width]


def _runs_of(flat):
    """
    The runs of set pixels of flattened masks, without a copy of the masks (large temporary
    buffers made per chunk fragment the C heap and inflate the resident memory).

    Args:
        flat: (c, L) bool.
    Returns:
        rows, begin, end (R,) int64: mask, first pixel and one-past-last pixel of each run,
        sorted by mask then position.
    """
    c, length = flat.shape
    rows, where = torch.nonzero(flat[:, 1:] != flat[:, :-1], as_tuple=True)
    first = torch.nonzero(flat[:, 0], as_tuple=True)[0]
    last = torch.nonzero(flat[:, -1], as_tuple=True)[0]
    rows = torch.cat((first, rows, last))
    where = torch.cat((torch.zeros_like(first), where + 1, torch.full_like(last, length)))
    order = torch.argsort(rows * (length + 1) + where)
    rows, where = rows[order], where[order]
    # Changes alternate start / one-past-end within each mask, in order.
    return rows[0::2], where[0::2], where[1::2]


def _split_at(step, rows, begin, end):
    """
    Intervals [begin, end) (R,) int64 split at the multiples of ``step``.

    Returns:
        (block, rows, begin, end) (R',) int64: each piece's block (begin // step) and its
        clipped bounds, pieces of one interval in order.
    """
    first, last = begin // step, (end - 1) // step
    pieces = last - first + 1
    source = torch.repeat_interleave(torch.arange(rows.shape[0], device=rows.device), pieces)
    offset = torch.arange(source.shape[0], device=rows.device) - torch.repeat_interleave(
        torch.cumsum(pieces, dim=0) - pieces, pieces)
    block = first[source] + offset
    lo = torch.maximum(begin[source], block * step)
    hi = torch.minimum(end[source], (block + 1) * step)
    return block, rows[source], lo, hi


def _run_lengths(pieces, num_pixels):
    """
    pycocotools' uncompressed counts (alternating clear / set run lengths, clear first) of one
    mask from its runs [(starts, ends) per band], pieces split at band edges joined again.
    """
    if not pieces:
        return [num_pixels]
    starts = torch.cat([p[0] for p in pieces]).numpy()
    ends = torch.cat([p[1] for p in pieces]).numpy()
    joined = np.ones(starts.shape[0], dtype=bool)
    joined[1:] = starts[1:] != ends[:-1]          # False: continues the previous piece
    starts = starts[joined]
    ends = ends[np.append(joined[1:], True)]
    gaps = starts - np.concatenate(([0], ends[:-1]))
    counts = np.stack((gaps, ends - starts), axis=1).ravel().tolist()
    tail = num_pixels - int(ends[-1])
    return counts + [tail] if tail else counts


def _banded_intersections(runs, idx):
    """(m, m) float64 |M_a ∩ M_b| of the masks ``idx`` from products of decoded segments."""
    m = idx.shape[0]
    out = torch.zeros((m, m), dtype=torch.float64, device=runs.areas.device)
    for covered, weights in runs.decoded_bands(idx, BAND_ELEMENTS):
        part = covered.to(torch.float32)
        # Integers: per-band sums of at most PIXEL_BAND = 2^22 pixels are exact in float32.
        out += ((part * weights.to(torch.float32)) @ part.t()).to(torch.float64)
    return out


def _rle_intersections_over_area(runs, idx):
    """(m, m) float64 [a, b] = |M_a ∩ M_b| / |M_a| by pycocotools' run merging."""
    rles = runs.to_rles(idx)
    # iscrowd: pycocotools divides the intersection by the first mask's area.
    ios = mask_util.iou(rles, rles, [1] * len(rles))
    return torch.from_numpy(np.asarray(ios, dtype=np.float64)).to(runs.areas.device)


def run_self_overlaps(runs):
    """
    The intra-class overlap function of ``ops.semantic_soft_merge_overlaps`` from runs.

    Args:
        runs (MaskRuns): of non-empty masks.
    Returns:
        a function idx (k,) int64 -> (k, k) float64 with [a, b] = |M_a ∩ M_b| / |M_a|.
    """
    run_counts = runs.run_counts()
    on_cuda = runs.areas.device.type == "cuda"

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
