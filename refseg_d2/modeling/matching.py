"""
The matching stage: the proposals of one target image against the class prototypes of a memory
(method-reference 3, steps 11-16 of section 13): cosine classification, class-aware NMS on the
low-resolution boxes ranked by SAM 2's predicted IoU, masks at the original size for the kept
proposals only, semantic-aware soft merging and the top-k.

Timer stages: "classification_nms", "mask_upsampling", "soft_merging" (with the top-k).
"""
import torch
from detectron2.structures import Boxes, Instances

from . import ops


class ProposalMatcher:
    """Proposals + prototypes -> Instances at the original image size."""

    def __init__(self, timer, nms_thresh=0.5, nms_keep_factor=8, max_detections=100,
                 merge_exponent=0.5):
        """
        Args:
            timer (StageTimer): where the stage times go.
            nms_thresh (float): box IoU threshold of the class-aware NMS.
            nms_keep_factor (int): NMS keeps at most nms_keep_factor * max_detections masks.
            max_detections (int): detections per image.
            merge_exponent (float): exponent of the soft-merging decay.
        """
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
        with timer.stage("mask_upsampling", dev):
            masks = proposals.full_masks(keep, (height, width))
            nonempty = masks.flatten(1).any(dim=1)
            keep, masks = keep[nonempty], masks[nonempty]
        with timer.stage("soft_merging", dev):
            merged = ops.semantic_soft_merge(
                masks, labels[keep], proposals.features[keep], scores[keep], self.merge_exponent
            )
            order = ops.select_top_k(merged, self.max_detections)
            result = Instances((height, width))
            result.pred_masks = masks[order]
            result.pred_boxes = Boxes(ops.masks_to_boxes_inclusive(result.pred_masks).to(torch.float32))
            result.scores = merged[order]
            result.pred_classes = labels[keep][order]
        return result
