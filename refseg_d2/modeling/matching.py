"""
The matching stage: the proposals of one target image against the class prototypes of a memory
(the second half of the authors' ``Sam2MatchingBaselineNoAMG.forward_test``): cosine
classification, class-aware NMS on the low-resolution boxes ranked by SAM 2's predicted IoU,
masks at the original size for the kept proposals only, semantic-aware soft merging and the top-k.

Full-size masks are handled in one of two ways, with identical results:
- "dense": all kept masks at full size at once; intersections by matrix products (fast on a
  GPU, n x H x W bytes of memory);
- "streamed": kept masks upsampled a chunk at a time and reduced to their runs of set pixels
  (``mask_overlaps``); intersections from the runs; only the final top-k are held at full size
  (bounded memory at any image size, and faster on a CPU).
"auto" picks "dense" on CUDA when n x H x W <= max_pixels (``FULL_MASKS.MAX_PIXELS``),
"streamed" otherwise (chunks of at most max_pixels pixels, see ``proposals.LogitMasks``).

Timer stages: "classification_nms", "mask_upsampling", "soft_merging" (with the top-k).
"""
import torch
from detectron2.structures import Boxes, Instances

from . import ops
from .mask_overlaps import MaskRuns, run_self_overlaps

FULL_MASK_MODES = ("auto", "dense", "streamed")


class ProposalMatcher:
    """Proposals + prototypes -> Instances at the original image size."""

    def __init__(self, timer, nms_thresh=0.5, nms_keep_factor=8, max_detections=100,
                 merge_exponent=0.5, full_mask_mode="auto", max_pixels=1 << 28):
        """
        Args:
            timer (StageTimer): where the stage times go.
            nms_thresh (float): box IoU threshold of the class-aware NMS.
            nms_keep_factor (int): NMS keeps at most nms_keep_factor * max_detections masks.
            max_detections (int): detections per image.
            merge_exponent (float): exponent of the soft-merging decay.
            full_mask_mode (str): "auto", "dense" or "streamed" (see the module docstring); not
                a config key: only tests and benchmarks force a mode.
            max_pixels (int): "auto" holds the kept masks at full size at once (on CUDA) only
                up to this many mask pixels.
        """
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
        with timer.stage("classification_nms", dev):
            scores, labels = ops.classify(proposals.features, prototypes)
            keep = ops.class_aware_nms(
                proposals.boxes, proposals.pred_ious, labels, self.nms_thresh,
                self.nms_keep_factor * self.max_detections,
            )
            keep = keep[scores[keep] > 0]
        size = (height, width)
        with timer.stage("mask_upsampling", dev):
            if self._dense(len(keep), size, dev):
                masks = proposals.full_masks(keep, size)
                nonempty = masks.flatten(1).any(dim=1)
                keep, masks = keep[nonempty], masks[nonempty]
                overlaps = ops.dense_self_overlaps(masks)
            else:
                masks = None
                runs = MaskRuns.from_chunks(proposals.iter_full_masks(keep, size), len(keep), size)
                nonempty = runs.areas > 0
                keep = keep[nonempty]
                overlaps = run_self_overlaps(runs.subset(nonempty))
        with timer.stage("soft_merging", dev):
            merged = ops.semantic_soft_merge_overlaps(
                overlaps, labels[keep], proposals.features[keep], scores[keep], self.merge_exponent
            )
            order = ops.select_top_k(merged, self.max_detections)
        with timer.stage("mask_upsampling", dev):
            top = masks[order] if masks is not None else proposals.full_masks(keep[order], size)
        result = Instances(size)
        result.pred_masks = top
        result.pred_boxes = Boxes(ops.masks_to_boxes_inclusive(top).to(torch.float32))
        result.scores = merged[order]
        result.pred_classes = labels[keep][order]
        return result

    def _dense(self, count, size, device):
        """Whether ``count`` kept masks of ``size`` are held at full size at once."""
        if self.full_mask_mode != "auto":
            return self.full_mask_mode == "dense"
        return device.type == "cuda" and count * size[0] * size[1] <= self.max_pixels
