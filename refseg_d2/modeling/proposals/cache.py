"""
The on-disk cache of the reference-independent proposals of target images.

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

import numpy as np
import pycocotools.mask as mask_util
import torch

from ...utils.files import atomic_write
from .proposals import Proposals

logger = logging.getLogger(__name__)

CACHE_FORMAT = 1


class RLEMasks:
    """Proposal masks held as COCO RLEs at the output size (proposals read from the cache)."""

    def __init__(self, rles, size, device):
        """
        Args:
            rles (list[dict]): N COCO RLEs of (H, W) masks.
            size: (H, W).
        """
        self.rles = rles
        self.size = tuple(size)
        self.device = device

    def full(self, indices, size):
        """(k, H, W) bool, decoded; ``size`` must be the size the masks were stored at."""
        if tuple(size) != self.size:
            raise ValueError("Cached masks are {} but {} was asked for".format(self.size, tuple(size)))
        if indices.numel() == 0:
            return torch.zeros((0,) + self.size, dtype=torch.bool, device=self.device)
        masks = mask_util.decode([self.rles[i] for i in indices.tolist()])  # (H, W, k) uint8
        return torch.from_numpy(masks).permute(2, 0, 1).to(device=self.device, dtype=torch.bool)


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
            atomic_write(info, lambda f: f.write(json.dumps(self.settings, indent=2).encode()))
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
                entry["boxes"].to(device), RLEMasks(rles, size, device),
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
        atomic_write(self.path(inputs), lambda f: torch.save(entry, f))
