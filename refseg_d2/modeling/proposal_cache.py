"""
Reference-independent proposals of a target image, and their on-disk cache.

What a target image yields before any reference is involved (SAM 2's kept proposals and their
pooled DINOv2 features) is the expensive part of the method and is identical for every shot
count and seed of a benchmark. The cache stores it per image, with the full-resolution masks
as COCO RLE, so a later run with other references skips SAM 2 and DINOv2 and gives exactly the
predictions of an uncached run.

Entries live in ``<root>/<settings hash>/<image hash>.pt``: any change of the weights or of a
setting that affects proposals selects another folder, any change of the image file (path,
size, modification time) or of its output size another file. Writes are atomic (temporary
file, then rename); an unreadable entry is discarded and recomputed.
"""
import hashlib
import json
import logging
import os
import tempfile

import numpy as np
import pycocotools.mask as mask_util
import torch

from . import ops

logger = logging.getLogger(__name__)

CACHE_FORMAT = 1


class Proposals:
    """
    The reference-independent part of one target image (N proposals).

    Attributes:
        features: (N, D) unit-norm pooled DINOv2 features (zero for an empty mask).
        pred_ious: (N,) SAM 2 predicted IoUs.
        boxes: (N, 4) int64 inclusive boxes on the low-resolution mask grid.
        logits: (N, h, w) low-resolution mask logits, or None when loaded from the cache.
        rles: list of N COCO RLEs of the full-resolution masks, or None when not cached.
    """

    def __init__(self, features, pred_ious, boxes, logits=None, rles=None):
        self.features = features
        self.pred_ious = pred_ious
        self.boxes = boxes
        self.logits = logits
        self.rles = rles

    def full_masks(self, indices, size, chunk=64):
        """(k, H, W) bool full-resolution masks of the proposals ``indices`` (k,)."""
        if self.logits is not None:
            return ops.upsample_mask_logits(self.logits[indices], size, chunk)
        device = self.features.device
        if indices.numel() == 0:
            return torch.zeros((0,) + tuple(size), dtype=torch.bool, device=device)
        rles = [self.rles[i] for i in indices.tolist()]
        masks = mask_util.decode(rles)  # (H, W, k) uint8
        return torch.from_numpy(masks).permute(2, 0, 1).to(device=device, dtype=torch.bool)


def encode_masks(masks, chunk=64):
    """(N, H, W) bool tensor -> list of N COCO RLEs (counts as bytes)."""
    rles = []
    for start in range(0, masks.shape[0], chunk):
        part = masks[start : start + chunk].permute(1, 2, 0).cpu().numpy().astype(np.uint8)
        rles.extend(mask_util.encode(np.asfortranarray(part)))
    return rles


def settings_hash(settings):
    """A short stable hash of a JSON-serialisable settings dict."""
    blob = json.dumps(settings, sort_keys=True).encode()
    return hashlib.sha1(blob).hexdigest()[:16]


class ProposalCache:
    """On-disk cache of :class:`Proposals`, one file per target image."""

    def __init__(self, root, settings):
        """
        Args:
            root (str): cache folder (created).
            settings (dict): everything the proposals depend on besides the image (weights
                fingerprints, input sizes, grid, thresholds, precision); JSON-serialisable.
        """
        self.settings = dict(settings, cache_format=CACHE_FORMAT)
        self.dir = os.path.join(root, settings_hash(self.settings))
        os.makedirs(self.dir, exist_ok=True)
        info = os.path.join(self.dir, "settings.json")
        if not os.path.exists(info):
            _atomic_write(info, lambda f: f.write(json.dumps(self.settings, indent=2).encode()))
        self.hits = 0
        self.misses = 0

    def path(self, inputs):
        """The entry file of a target image (from its file's path, size and mtime, and output size)."""
        file_name = os.path.abspath(inputs["file_name"])
        st = os.stat(file_name)
        ident = [file_name, st.st_size, st.st_mtime_ns, inputs.get("height"), inputs.get("width")]
        return os.path.join(self.dir, settings_hash(ident) + ".pt")

    def load(self, inputs, device):
        """The cached :class:`Proposals` of ``inputs`` on ``device``, or None."""
        path = self.path(inputs)
        if not os.path.exists(path):
            self.misses += 1
            return None
        try:
            entry = torch.load(path, map_location="cpu", weights_only=True)
            counts, offsets = entry["rle_counts"].numpy().tobytes(), entry["rle_offsets"].tolist()
            size = entry["size"]
            rles = [
                {"size": size, "counts": counts[offsets[i] : offsets[i + 1]]}
                for i in range(len(offsets) - 1)
            ]
            proposals = Proposals(
                entry["features"].to(device), entry["pred_ious"].to(device),
                entry["boxes"].to(device), rles=rles,
            )
        except Exception as e:
            logger.warning("Discarding unreadable cache entry %s (%s)", path, e)
            os.remove(path)
            self.misses += 1
            return None
        self.hits += 1
        return proposals

    def save(self, inputs, proposals, full_masks):
        """
        Store ``proposals`` of ``inputs`` with their full-resolution masks.

        Args:
            full_masks: (N, H, W) bool, the masks of every proposal at the output size.
        """
        rles = encode_masks(full_masks)
        counts = [r["counts"] for r in rles]
        offsets = np.cumsum([0] + [len(c) for c in counts])
        entry = {
            "features": proposals.features.cpu(),
            "pred_ious": proposals.pred_ious.cpu(),
            "boxes": proposals.boxes.cpu(),
            "size": [int(full_masks.shape[1]), int(full_masks.shape[2])],
            "rle_counts": torch.from_numpy(np.frombuffer(b"".join(counts), dtype=np.uint8).copy()),
            "rle_offsets": torch.from_numpy(offsets.astype(np.int64)),
        }
        _atomic_write(self.path(inputs), lambda f: torch.save(entry, f))


def _atomic_write(path, write):
    """Write through ``write(file)`` into a temporary file beside ``path``, then rename it."""
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp_", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
