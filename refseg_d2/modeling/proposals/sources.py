"""
Proposal sources (``MODEL.REFSEG.PROPOSALS.SOURCE``): what SAM 2 is prompted with on a target
image. A registered class built with ``cls(cfg)`` and called with
``(prompter, inputs, embedding, high_res, size)`` (inside the prompter's autocast) ->
(logits (N, h, w), rank_scores (N,), output boxes (N, 4) float XYXY in original pixels or None).

- "points" ("No Time to Train!"): the point grid, best of three masks per point, kept when SAM 2's
  predicted IoU exceeds ``PRED_IOU_THRESH``; ranked by that IoU; boxes from the masks.
- "boxes_file": the boxes of a COCO results file (any detector, or FSOD-VFM's proposal network),
  selected as FSOD-VFM selects its proposals (:func:`select_boxes`); one single-mask box prompt
  each; ranked in that order; the boxes are the detections' boxes.
- "detector": the same from a Detectron2 model run on each target (``detector.py``).
"""
import json
import logging
from collections import defaultdict

import torch
from detectron2.utils.registry import Registry

from ...config import declare_choices
from ...utils.registry import register_as, registered

logger = logging.getLogger(__name__)

REFSEG_PROPOSAL_SOURCE_REGISTRY = Registry("REFSEG_PROPOSAL_SOURCE")
REFSEG_PROPOSAL_SOURCE_REGISTRY.__doc__ = __doc__


def build_proposal_source(cfg):
    """The proposal source named by ``MODEL.REFSEG.PROPOSALS.SOURCE``."""
    name = cfg.MODEL.REFSEG.PROPOSALS.SOURCE
    return registered(REFSEG_PROPOSAL_SOURCE_REGISTRY, "MODEL.REFSEG.PROPOSALS.SOURCE", name)(cfg)


@register_as(REFSEG_PROPOSAL_SOURCE_REGISTRY, "points")
class PointGridSource:
    """SAM 2 prompted with the point grid of the prompter (POINTS_PER_SIDE)."""

    def __init__(self, cfg=None):
        pass

    def __call__(self, prompter, inputs, embedding, high_res, size):
        logits, pred_ious = prompter.decode_point_grid(embedding, high_res)
        return logits, pred_ious, None


def select_boxes(boxes, scores, width, height, min_score=0.01, max_boxes=100):
    """
    FSOD-VFM's proposal selection: scores >= ``min_score``; boxes cast to int32 (truncation
    toward zero); ordered by the score rounded to 2 decimals, then by the score, then by input
    order; the first ``max_boxes``; then clipped to [0, width] x [0, height]; boxes left empty
    (x1 <= x0 or y1 <= y0) dropped (not replaced).

    Args:
        boxes: (n, 4) float XYXY in original pixels; scores: (n,) float.
    Returns:
        (m, 4) float32 integral XYXY boxes and (m,) float32 scores, m <= max_boxes.
    """
    scores = scores.to(torch.float32)
    keep = torch.nonzero(scores >= min_score, as_tuple=True)[0]
    boxes, scores = boxes[keep].to(torch.float32).to(torch.int32), scores[keep]
    order = torch.argsort(scores, descending=True, stable=True)
    rounded = torch.round(scores[order] * 100) / 100
    order = order[torch.argsort(rounded, descending=True, stable=True)][:max_boxes]
    boxes, scores = boxes[order], scores[order]
    limit = torch.tensor([width, height, width, height], dtype=torch.int32, device=boxes.device)
    boxes = torch.minimum(boxes.clamp(min=0), limit)
    valid = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    return boxes[valid].to(torch.float32), scores[valid]


class BoxPromptSource:
    """
    SAM 2 prompted with boxes (single mask each), in batches of ``BOXES_PER_BATCH`` (masks do
    not depend on it). Subclasses give ``raw_boxes(inputs, size)`` -> (n, 4) float XYXY in
    original pixels and (n,) scores, before :func:`select_boxes`.
    """

    def __init__(self, cfg):
        p = cfg.MODEL.REFSEG.PROPOSALS
        self.min_score = p.MIN_SCORE
        self.max_boxes = p.MAX_BOXES
        self.boxes_per_batch = p.BOXES_PER_BATCH

    def __call__(self, prompter, inputs, embedding, high_res, size):
        height, width = size
        boxes, scores = self.raw_boxes(inputs, size)
        boxes, _ = select_boxes(boxes, scores, width, height, self.min_score, self.max_boxes)
        boxes = boxes.to(embedding.device)
        prompts = prompter.input_boxes(boxes, size)
        h, w = high_res[0].shape[-2:]
        parts = [embedding.new_zeros((0, h, w))]
        for start in range(0, len(prompts), self.boxes_per_batch):
            chunk = prompts[start : start + self.boxes_per_batch]
            parts.append(prompter.decode_boxes(embedding, high_res, chunk))
        logits = torch.cat([p.float() for p in parts])
        ranks = torch.arange(len(boxes), 0, -1, dtype=torch.float32, device=embedding.device)
        return logits, ranks, boxes


@register_as(REFSEG_PROPOSAL_SOURCE_REGISTRY, "boxes_file")
class BoxesFileSource(BoxPromptSource):
    """
    The boxes of a COCO results file (``PROPOSALS.BOXES_FILE``: a list of {"image_id", "bbox"
    XYWH, "score"}; other keys ignored), matched to the targets by "image_id". A target without
    an entry is an error naming it; entries of ids that no target asks for are reported once
    (``unused_ids``).
    """

    def __init__(self, cfg):
        super().__init__(cfg)
        self.path = cfg.MODEL.REFSEG.PROPOSALS.BOXES_FILE
        self.boxes = load_boxes_file(self.path)

    def unused_ids(self, image_ids):
        """The ids of the file that are not in ``image_ids`` (sorted)."""
        return sorted(set(self.boxes) - {int(i) for i in image_ids})

    def raw_boxes(self, inputs, size):
        image_id = inputs.get("image_id")
        if image_id is None or int(image_id) not in self.boxes:
            raise KeyError(
                "MODEL.REFSEG.PROPOSALS.BOXES_FILE {} has no box for image_id {} ({})".format(
                    self.path, image_id, inputs.get("file_name", "?")))
        boxes, scores = self.boxes[int(image_id)]
        return boxes, scores


def load_boxes_file(path):
    """
    Read a COCO results JSON into {image_id: ((n, 4) float64 XYXY, (n,) float64 scores)} in file
    order, the XYXY corners computed as x + w, y + h in double precision.

    Raises:
        ValueError: naming the file and the entry at fault.
    """
    if not path:
        raise ValueError("MODEL.REFSEG.PROPOSALS.SOURCE boxes_file needs "
                         "MODEL.REFSEG.PROPOSALS.BOXES_FILE (a COCO results JSON)")
    try:
        with open(path) as f:
            entries = json.load(f)
    except (OSError, ValueError) as e:
        raise ValueError("Cannot read MODEL.REFSEG.PROPOSALS.BOXES_FILE {}: {}".format(path, e)) from e
    if not isinstance(entries, list):
        raise ValueError("{} is not a COCO results file (a JSON list of detections)".format(path))
    per_image = defaultdict(lambda: ([], []))
    for i, entry in enumerate(entries):
        try:
            x, y, w, h = (float(v) for v in entry["bbox"])
            image_id, score = int(entry["image_id"]), float(entry["score"])
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError("Entry {} of {} needs 'image_id', 'bbox' [x, y, w, h] and 'score': "
                             "{!r}".format(i, path, entry)) from e
        per_image[image_id][0].append([x, y, x + w, y + h])
        per_image[image_id][1].append(score)
    return {
        k: (torch.tensor(b, dtype=torch.float64), torch.tensor(s, dtype=torch.float64))
        for k, (b, s) in per_image.items()
    }


DETECTOR_OUTPUTS = declare_choices("PROPOSALS.DETECTOR.OUTPUT", ("detections", "proposals"))


@register_as(REFSEG_PROPOSAL_SOURCE_REGISTRY, "detector")
class DetectorSource(BoxPromptSource):
    """
    The boxes of a Detectron2 model (``PROPOSALS.DETECTOR.CONFIG`` / ``.WEIGHTS``), built once
    and run on each target, used class-agnostically: its final detections (scores) or its RPN
    proposals (sigmoid of the objectness), ``PROPOSALS.DETECTOR.OUTPUT``.
    """

    def __init__(self, cfg):
        from .detector import BoxDetector

        super().__init__(cfg)
        d = cfg.MODEL.REFSEG.PROPOSALS.DETECTOR
        self.detector = BoxDetector(d.CONFIG, d.WEIGHTS, d.OUTPUT, cfg.MODEL.DEVICE,
                                    cfg.MODEL.REFSEG.RANDOM_INIT)

    def raw_boxes(self, inputs, size):
        return self.detector(inputs, size)
