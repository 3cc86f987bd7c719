"""
A predictor in the spirit of Detectron2's ``DefaultPredictor``: build the model from a config,
give it references (image files or arrays with masks or boxes, or a registered dataset), save or
load its memory, and call it on images.

Example::

    predictor = RefSegPredictor(cfg)
    predictor.add_references("cat.jpg", ["cat"], masks=[cat_mask])     # (H, W) bool
    predictor.add_references(dog_image, ["dog"], boxes=[[10, 20, 200, 180]])   # XYXY
    predictor.save_memory("output/my_memory.pth")
    instances = predictor(image)["instances"]   # (H, W, 3) uint8, cfg.INPUT.FORMAT order

References are encoded by the model's reference encoder, as ``tools/train_net.py`` encodes them
(``refseg_d2.engine.memory_filling``); each call builds a :class:`MemoryBank` of the new
references and extends the predictor's memory with it.
"""
import logging
import time

import numpy as np
import torch
from detectron2.data.catalog import Metadata
from detectron2.modeling import build_model
from detectron2.structures import Boxes, BoxMode, Instances
from PIL import Image

from .data.mappers import RefSegReferenceMapper, RefSegTargetMapper
from .data.reference_sources import mask_annotation
from .engine.memory_filling import build_memory
from .modeling.memory import MemoryBank, load_memory, record_statistics, save_memory
from .utils.images import image_size
from .utils.masks import binary_mask

logger = logging.getLogger(__name__)


def given_proposals(boxes, scores, height, width):
    """Detectron2's precomputed-proposals Instances of user boxes (see ``RefSegPredictor``)."""
    boxes = torch.as_tensor(np.asarray(boxes, dtype=np.float64)).reshape(-1, 4)
    if scores is None:
        scores = torch.ones(len(boxes), dtype=torch.float64)
    scores = torch.as_tensor(np.asarray(scores, dtype=np.float64)).reshape(-1)
    if len(scores) != len(boxes):
        raise ValueError("{} boxes but {} scores".format(len(boxes), len(scores)))
    proposals = Instances((int(height), int(width)))
    proposals.proposal_boxes = Boxes(boxes)
    proposals.objectness_logits = scores
    return proposals


class RefSegPredictor:
    """
    Attributes:
        model (RefSeg): in eval mode on cfg.MODEL.DEVICE; its ``memory`` is the predictor's.
    """

    def __init__(self, cfg):
        """
        Args:
            cfg (CfgNode): a refseg config. A memory file in MODEL.WEIGHTS is loaded.
        """
        self.cfg = cfg.clone()
        self.model = build_model(self.cfg)
        self.model.eval()
        self.input_format = self.cfg.INPUT.FORMAT
        if self.input_format not in ("RGB", "BGR"):
            raise ValueError("INPUT.FORMAT must be RGB or BGR, got {!r}".format(self.input_format))
        self.target_mapper = RefSegTargetMapper(self.cfg)
        self.reference_mapper = RefSegReferenceMapper(self.cfg)
        if self.cfg.MODEL.WEIGHTS:
            self.load_memory(self.cfg.MODEL.WEIGHTS)

    @property
    def memory(self):
        """The :class:`MemoryBank` in use."""
        return self.model.memory

    @property
    def provenance(self):
        """Per class, where each memory slot comes from ("file_name" None for an array)."""
        return self.memory.provenance

    @property
    def class_names(self):
        return list(self.memory.class_names)

    @property
    def metadata(self):
        """Detectron2 ``Metadata`` of the memory's classes (for the Visualizer)."""
        ids = self.memory.class_ids.tolist()
        return Metadata(
            name="refseg_predictor",
            thing_classes=self.class_names,
            thing_dataset_id_to_contiguous_id={i: c for c, i in enumerate(ids)},
        )

    @torch.no_grad()
    def __call__(self, image, boxes=None, scores=None):
        """
        Args:
            image: (H, W, 3) uint8 array in cfg.INPUT.FORMAT channel order, a PIL image, or
                an image file name (read as the test loader reads it).
            boxes: optional (n, 4) XYXY boxes in the image's pixels (array, list or tensor):
                SAM 2 is prompted with these instead of the config's proposal source, with the
                same box selection as a boxes file (MODEL.REFSEG.PROPOSALS: scores below
                MIN_SCORE dropped, MAX_BOXES best, integer boxes clipped to the image).
            scores: optional (n,) scores of ``boxes`` (default: 1 each).
        Returns:
            dict: {"instances": Instances} at (H, W) with pred_masks (N, H, W) bool,
            pred_boxes, scores (N,) and pred_classes (N,) (index into :attr:`class_names`),
            on cfg.MODEL.DEVICE, as Detectron2's ``DefaultPredictor`` returns.
        """
        if not self.memory.is_ready:
            raise RuntimeError(
                "The predictor has no references: call add_references(...) or "
                "load_memory(path) first"
            )
        if isinstance(image, str):
            inputs = self.target_mapper({"file_name": image})
        else:
            inputs = self.target_mapper({"file_name": None}, image=self._to_pil(image, "image"))
        if boxes is not None:
            inputs["proposals"] = given_proposals(boxes, scores, inputs["height"], inputs["width"])
        return self.model([inputs])[0]

    def _to_pil(self, image, what):
        if isinstance(image, Image.Image):
            return image.convert("RGB")
        array = np.asarray(image)
        if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8:
            raise ValueError(
                "{} must be an (H, W, 3) uint8 array, a PIL image or a file name; got an array "
                "of shape {} and dtype {}".format(what, array.shape, array.dtype)
            )
        if self.input_format == "BGR":
            array = array[:, :, ::-1]
        return Image.fromarray(np.ascontiguousarray(array))

    @torch.no_grad()
    def add_references(self, image, classes, masks=None, boxes=None):
        """
        Add the instances of one reference image to the memory (existing classes get more
        shots, new class names become new classes at the end).

        Args:
            image: (H, W, 3) uint8 array (cfg.INPUT.FORMAT), a PIL image or an image file name.
            classes (list[str]): the class name of each instance (R,).
            masks: (R, H, W) masks (bool, or label/grey levels read by
                :func:`~refseg_d2.utils.masks.binary_mask`), or None. Messages name each
                reference as given, e.g. "masks[2] (class 'dog')".
            boxes: (R, 4) XYXY boxes in pixels, or None. With masks, they set the crop boxes
                (default: the masks' extents); alone, each box is a box-only reference whose
                mask SAM 2 makes (MODEL.REFSEG.MEMORY.BOX_MASK_SOURCE); one outside the image
                is skipped with a warning.
        Returns:
            dict: the statistics of ``build_memory``.
        """
        start = time.perf_counter()
        classes = [str(c) for c in ([classes] if isinstance(classes, str) else classes)]
        if masks is None and boxes is None:
            raise ValueError(
                "add_references needs masks or boxes for {} instance(s)".format(len(classes))
            )
        if isinstance(image, str):
            file_name, pil = image, None
            size = image_size(image, self.cfg.MODEL.REFSEG.INPUT.APPLY_EXIF)
        else:
            pil = self._to_pil(image, "reference image")
            file_name, size = None, pil.size
        names = list(dict.fromkeys(classes))
        d = {
            "file_name": file_name, "image_id": 1, "width": size[0], "height": size[1],
            "annotations": self._annotations(classes, names, masks, boxes, size, file_name),
        }
        records = self.model.encode_references([self.reference_mapper(d, image=pil)])
        added = MemoryBank.from_records(
            records, list(range(1, len(names) + 1)), names, self.memory, with_provenance=True
        )
        self.memory.extend(added)
        logger.info("Memory now: %s", self.memory.extra_repr())
        return record_statistics(records, added, 1, time.perf_counter() - start)

    @staticmethod
    def _annotations(classes, names, masks, boxes, size, source):
        what = source or "the reference array"
        width, height = size
        count = len(masks) if masks is not None else len(boxes)
        if count != len(classes) or (boxes is not None and len(boxes) != count):
            raise ValueError(
                "References of {}: {} class names for {} masks and {} boxes".format(
                    what, len(classes), "no" if masks is None else len(masks),
                    "no" if boxes is None else len(boxes),
                )
            )
        annotations = []
        for r in range(count):
            label = names.index(classes[r])
            given = "masks" if masks is not None else "boxes"
            name = "{}[{}] (class {!r}){}".format(
                given, r, classes[r], " of {}".format(source) if source else "")
            if masks is not None:
                mask = masks[r].cpu().numpy() if torch.is_tensor(masks[r]) else masks[r]
                mask = binary_mask(mask, name)
                if mask.shape != (height, width):
                    raise ValueError(
                        "Mask {} of {} is {} but the image is {}x{} (H x W)".format(
                            r, what, mask.shape, height, width
                        )
                    )
                if not mask.any():
                    raise ValueError("Mask {} of {} is empty".format(r, what))
                ann = mask_annotation(mask, label)
            else:
                ann = {"category_id": label, "iscrowd": 0}
            if boxes is not None:
                box = [float(v) for v in boxes[r]]
                if len(box) != 4 or not all(np.isfinite(box)) or box[2] <= box[0] or box[3] <= box[1]:
                    raise ValueError("Box {} of {} is not a XYXY box: {}".format(r, what, box))
                ann["bbox"], ann["bbox_mode"] = box, BoxMode.XYXY_ABS
            ann["refseg_name"] = name
            annotations.append(ann)
        return annotations

    def add_reference_dataset(self, dataset_name):
        """
        Add every non-crowd annotation of a registered dataset as a reference. Into an empty
        memory the dataset's category ids are kept; otherwise classes are matched by name and
        new ones get new ids at the end. Returns the statistics of ``build_memory``.
        """
        added, stats = build_memory(self.cfg, self.model, [dataset_name], with_provenance=True)
        self.memory.extend(added)
        logger.info("Memory now: %s", self.memory.extra_repr())
        return stats

    def save_memory(self, path):
        """Save the memory (with the references' provenance) to ``path`` (a .pth file)."""
        return save_memory(self.memory, path)

    def load_memory(self, path):
        """Load a memory saved by :meth:`save_memory`, tools/train_net.py or tools/demo.py."""
        self.model.set_memory(load_memory(path, like=self.memory))
        return self.memory
