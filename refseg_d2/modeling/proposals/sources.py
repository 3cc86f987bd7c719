"""
Proposal sources (``MODEL.REFSEG.PROPOSALS.SOURCE``): what SAM 2 is prompted with on a target
image. A registered class built with ``cls(cfg)``, with
``check_targets(dicts, dataset_name)`` (raises, before any model work, when it cannot serve a
test set), ``prompts(inputs, size)`` -> what to prompt (None for the grid, (n, 4) boxes
otherwise; timer stage "box_proposals") and ``decode(prompter, prompts, embedding, high_res,
size)`` (inside the prompter's autocast) -> (logits (N, h, w), rank_scores (N,), output boxes
(N, 4) float XYXY in original pixels or None); ``stage``: the timer stage of ``prompts`` (None:
not timed).

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

    stage = None

    def __init__(self, cfg=None):
        pass

    def check_targets(self, dicts, dataset_name):
        """Nothing to check: every image gets the grid."""

    def prompts(self, inputs, size):
        return None

    def decode(self, prompter, prompts, embedding, high_res, size):
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

    stage = "box_proposals"

    def __init__(self, cfg=None):
        if cfg is None:
            self.min_score, self.max_boxes, self.boxes_per_batch = 0.01, 100, 32
            return
        p = cfg.MODEL.REFSEG.PROPOSALS
        self.min_score = p.MIN_SCORE
        self.max_boxes = p.MAX_BOXES
        self.boxes_per_batch = p.BOXES_PER_BATCH

    def check_targets(self, dicts, dataset_name):
        """Check, before any model work, that the targets of ``dataset_name`` can be served."""

    def prompts(self, inputs, size):
        """(m, 4) float32 selected integral XYXY boxes of the input (:func:`select_boxes`)."""
        height, width = size
        boxes, scores = self.raw_boxes(inputs, size)
        return select_boxes(boxes, scores, width, height, self.min_score, self.max_boxes)[0]

    def decode(self, prompter, boxes, embedding, high_res, size):
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


class GivenBoxesSource(BoxPromptSource):
    """
    The boxes an input carries itself, as Detectron2's precomputed proposals: "proposals", an
    Instances with proposal_boxes (XYXY, original pixels) and objectness_logits (the scores).
    ``RefSegPredictor(image, boxes=...)`` gives them; they replace the model's source.
    """

    def raw_boxes(self, inputs, size):
        proposals = inputs["proposals"]
        return (proposals.proposal_boxes.tensor.to(torch.float64).cpu(),
                proposals.objectness_logits.to(torch.float64).cpu())


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
        # without a file, only inputs that carry their own boxes can be served (the predictor)
        self.boxes = load_boxes_file(self.path) if self.path else None

    def _file(self):
        if self.boxes is None:
            raise ValueError("MODEL.REFSEG.PROPOSALS.SOURCE boxes_file needs "
                             "MODEL.REFSEG.PROPOSALS.BOXES_FILE (a COCO results JSON), or boxes "
                             "given with each image (RefSegPredictor(image, boxes=...))")
        return self.boxes

    def check_targets(self, dicts, dataset_name):
        """
        Raise KeyError naming the first image of ``dicts`` without boxes in the file; warn
        about the ids of the file that no image of the dataset has.
        """
        ids, boxes = set(), self._file()
        for d in dicts:
            image_id = d.get("image_id")
            if image_id is None or int(image_id) not in boxes:
                raise KeyError(
                    "MODEL.REFSEG.PROPOSALS.BOXES_FILE {} has no box for image_id {} ({}) of "
                    "the test dataset {!r}".format(self.path, image_id, d.get("file_name", "?"),
                                                   dataset_name))
            ids.add(int(image_id))
        unknown = sorted(set(boxes) - ids)
        if unknown:
            logger.warning("MODEL.REFSEG.PROPOSALS.BOXES_FILE %s has boxes for %d image ids that "
                           "the test dataset %r does not have (ignored), e.g. %s", self.path,
                           len(unknown), dataset_name, unknown[:5])

    def raw_boxes(self, inputs, size):
        image_id, boxes = inputs.get("image_id"), self._file()
        if image_id is None or int(image_id) not in boxes:
            raise KeyError(
                "MODEL.REFSEG.PROPOSALS.BOXES_FILE {} has no box for image_id {} ({})".format(
                    self.path, image_id, inputs.get("file_name", "?")))
        return boxes[int(image_id)]


def load_boxes_file(path):
    """
    Read a COCO results JSON into {image_id: ((n, 4) float64 XYXY, (n,) float64 scores)} in file
    order, the XYXY corners computed as x + w, y + h in double precision.

    Raises:
        ValueError: naming the file and the entry at fault.
    """
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
