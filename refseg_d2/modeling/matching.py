"""
The matching stage: the proposals of one target image against the class prototypes of a memory
(the second half of NTT's ``Sam2MatchingBaselineNoAMG.forward_test``, or FSOD-VFM's scoring):
cosine classification, class-aware NMS ranked by the proposals' rank scores, de-duplication
(``dedup.py``: NTT's soft merging on the full-size masks, or graph diffusion), the top-k, and
masks at the original size for the detections.

``NEGATIVE_SCORES`` "drop" (NTT): the cosine is clamped at 0 before the argmax and proposals
scoring 0 are dropped after the NMS. "keep" (FSOD-VFM): the argmax of the raw cosine (the first
class on ties), every score kept, negatives included.

The masks the de-duplication compares (``DEDUP.MASKS``): "full" (NTT: the kept masks at full
size; a mask empty at full size is dropped, since it has no area) or "pooling" (FSOD-VFM: the
masks on the pooling grid, ``Proposals.pooled_masks``).

Full-size masks are handled in one of two ways, with identical results:
- "dense": all kept masks at full size at once; intersections by matrix products (fast on a
  GPU, n x H x W bytes of memory);
- "streamed": kept masks upsampled a chunk at a time and reduced to their runs of set pixels
  (``mask_overlaps``); intersections from the runs; only the final top-k are held at full size
  (bounded memory at any image size, and faster on a CPU).
"auto" picks "dense" on CUDA when n x H x W <= max_pixels (``FULL_MASKS.MAX_PIXELS``),
"streamed" otherwise (chunks of at most max_pixels pixels, see ``proposals.LogitMasks``).

Timer stages: "classification_nms", "mask_upsampling", "soft_merging" (de-duplication and top-k).
"""
import torch
from detectron2.structures import Boxes, Instances

from ..config import declare_choices
from . import ops
from .dedup import DEDUP_MASKS
from .mask_overlaps import MaskRuns, run_self_overlaps

FULL_MASK_MODES = ("auto", "dense", "streamed")
NEGATIVE_SCORES = declare_choices("NEGATIVE_SCORES", ("drop", "keep"))


class ProposalMatcher:
    """Proposals + prototypes -> Instances at the original image size."""

    def __init__(self, timer, nms_thresh=0.5, nms_keep_factor=8, max_detections=100,
                 merge_exponent=0.5, full_mask_mode="auto", max_pixels=1 << 28, dedup=None,
                 dedup_masks="full", negative_scores="drop"):
        """
        Args:
            timer (StageTimer): where the stage times go.
            nms_thresh (float): box IoU threshold of the class-aware NMS.
            nms_keep_factor (int): NMS keeps at most nms_keep_factor * max_detections masks.
            max_detections (int): detections per image.
            merge_exponent (float): exponent of the soft-merging decay (when ``dedup`` is None).
            full_mask_mode (str): "auto", "dense" or "streamed" (see the module docstring); not
                a config key: only tests and benchmarks force a mode.
            max_pixels (int): "auto" holds the kept masks at full size at once (on CUDA) only
                up to this many mask pixels.
            dedup: a ``dedup.REFSEG_DEDUP_REGISTRY`` callable (None: soft merging with
                ``merge_exponent``).
            dedup_masks (str): "full" or "pooling" (see the module docstring).
            negative_scores (str): "drop" or "keep" (see the module docstring).
        """
        if dedup_masks not in DEDUP_MASKS:
            raise ValueError("MODEL.REFSEG.DEDUP.MASKS must be one of {}, got {!r}".format(
                DEDUP_MASKS, dedup_masks))
        if negative_scores not in NEGATIVE_SCORES:
            raise ValueError("MODEL.REFSEG.NEGATIVE_SCORES must be one of {}, got {!r}".format(
                NEGATIVE_SCORES, negative_scores))
        if full_mask_mode not in FULL_MASK_MODES:
            raise ValueError("full_mask_mode must be one of {}, got {!r}".format(
                FULL_MASK_MODES, full_mask_mode))
        self.full_mask_mode = full_mask_mode
        self.max_pixels = max_pixels
        self.timer = timer
        self.nms_thresh = nms_thresh
        self.nms_keep_factor = nms_keep_factor
        self.max_detections = max_detections
        self.merge_exponent = merge_exponent
        self.dedup = dedup or self._soft_merge
        self.dedup_masks = dedup_masks
        self.negative_scores = negative_scores

    def _soft_merge(self, overlaps, labels, features, scores):
        return ops.semantic_soft_merge_overlaps(overlaps, labels, features, scores,
                                                self.merge_exponent)

    def __call__(self, proposals, prototypes, height, width):
        """
        Args:
            proposals (Proposals): N proposals of the image.
            prototypes: (C, D) unit-norm class prototypes (``MemoryBank.prototypes()``).
            height, width (int): the output size.
        Returns:
            Instances at (height, width): pred_masks (n, H, W) bool, pred_boxes (inclusive mask
            extents), scores (n,) decreasing and pred_classes (n,) class indices of the memory,
            n <= max_detections.
        """
        timer, dev = self.timer, prototypes.device
        size = (height, width)
        with timer.stage("classification_nms", dev):
            scores, labels = self._classify(proposals.features, prototypes)
            keep = ops.class_aware_nms(
                proposals.boxes, proposals.rank_scores, labels, self.nms_thresh,
                self.nms_keep_factor * self.max_detections,
            )
            if self.negative_scores == "drop":
                keep = keep[scores[keep] > 0]
        masks = None
        if self.dedup_masks == "full":
            with timer.stage("mask_upsampling", dev):
                keep, masks, overlaps = self._full_size_overlaps(proposals, keep, size, dev)
        else:
            overlaps = ops.dense_self_overlaps(proposals.pooled_masks[keep])
        with timer.stage("soft_merging", dev):
            merged = self.dedup(overlaps, labels[keep], proposals.features[keep], scores[keep])
            order = ops.select_top_k(merged, self.max_detections)
        with timer.stage("mask_upsampling", dev):
            top = masks[order] if masks is not None else proposals.full_masks(keep[order], size)
        result = Instances(size)
        result.pred_masks = top
        if proposals.output_boxes is not None:
            result.pred_boxes = Boxes(proposals.output_boxes[keep[order]].to(torch.float32))
        else:
            result.pred_boxes = Boxes(ops.masks_to_boxes_inclusive(top).to(torch.float32))
        result.scores = merged[order]
        result.pred_classes = labels[keep][order]
        return result

    def _classify(self, features, prototypes):
        """(N,) scores and (N,) labels (see NEGATIVE_SCORES in the module docstring)."""
        if self.negative_scores == "drop":
            return ops.classify(features, prototypes)
        scores, labels = (features @ prototypes.t()).max(dim=1)
        return scores, labels

    def _full_size_overlaps(self, proposals, keep, size, dev):
        """
        The kept masks at full size, those empty there dropped: (keep, the dense masks or None,
        the overlap function of ``dedup``).
        """
        if self._dense(len(keep), size, dev):
            masks = proposals.full_masks(keep, size)
            nonempty = masks.flatten(1).any(dim=1)
            keep, masks = keep[nonempty], masks[nonempty]
            return keep, masks, ops.dense_self_overlaps(masks)
        runs = MaskRuns.from_chunks(proposals.iter_full_masks(keep, size), len(keep), size)
        nonempty = runs.areas > 0
        return keep[nonempty], None, run_self_overlaps(runs.subset(nonempty))

    def _dense(self, count, size, device):
        """Whether ``count`` kept masks of ``size`` are held at full size at once."""
        if self.full_mask_mode != "auto":
            return self.full_mask_mode == "dense"
        return device.type == "cuda" and count * size[0] * size[1] <= self.max_pixels
