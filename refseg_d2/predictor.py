"""
A predictor in the spirit of Detectron2's ``DefaultPredictor``: build the model from a config,
give it references (image files or arrays with masks or boxes, or a registered dataset), save or
load its memory, and call it on images.

Example::

    predictor = RefSegPredictor(cfg)
    predictor.add_references("cat.jpg", ["cat"], masks=[cat_mask])     # (H, W) bool
    predictor.add_references(dog_image, ["dog"], boxes=[[10, 20, 200, 180]])   # XYXY
    predictor.save_memory("output/my_memory.pth")
    instances = predictor(image)    # (H, W, 3) uint8, cfg.INPUT.FORMAT channel order

References are encoded by ``fill_memory``, the code path of ``tools/train_net.py``.
"""
import itertools
import logging
import os
import tempfile

import numpy as np
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.catalog import Metadata
from detectron2.modeling import build_model
from detectron2.structures import BoxMode
from PIL import Image

from .checkpoint import RefSegCheckpointer
from .data.mappers import RefSegTargetMapper, pil_to_tensor, squash_resize
from .data.reference_sources import (
    PROVENANCE_KEY,
    image_size,
    mask_annotation,
    register_reference_dicts,
)
from .engine.memory_filling import fill_memory

logger = logging.getLogger(__name__)

_temporary_names = itertools.count()


class RefSegPredictor:
    """
    Attributes:
        model (RefSeg): in eval mode on cfg.MODEL.DEVICE.
        provenance (list): per class, a list of where each of its memory slots comes from
            (see :func:`refseg_d2.data.reference_sources.shot_provenance`; "file_name" is
            None for a reference given as an array), or None when unknown.
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
        self.provenance = []
        if self.cfg.MODEL.WEIGHTS:
            self.load_memory(self.cfg.MODEL.WEIGHTS)

    @property
    def memory(self):
        return self.model.memory

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
    def __call__(self, image):
        """
        Args:
            image: (H, W, 3) uint8 array in cfg.INPUT.FORMAT channel order, a PIL image, or
                an image file name (read as the test loader reads it).
        Returns:
            Instances at (H, W) with pred_masks (N, H, W) bool, pred_boxes, scores (N,) and
            pred_classes (N,) (index into :attr:`class_names`), on cfg.MODEL.DEVICE.
        """
        if not self.memory.is_ready:
            raise RuntimeError(
                "The predictor has no references: call add_references(...) or "
                "load_memory(path) first"
            )
        if isinstance(image, str):
            inputs = self.target_mapper({"file_name": image})
        else:
            pil = self._to_pil(image, "image")
            inputs = {
                "image": pil_to_tensor(squash_resize(pil, self.target_mapper.input_size)),
                "height": pil.height,
                "width": pil.width,
            }
        return self.model([inputs])[0]["instances"]

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

    def add_references(self, image, classes, masks=None, boxes=None):
        """
        Add the instances of one reference image to the memory (existing classes get more
        shots, new class names become new classes at the end).

        Args:
            image: (H, W, 3) uint8 array (cfg.INPUT.FORMAT), a PIL image or an image file name.
            classes (list[str]): the class name of each instance (R,).
            masks: (R, H, W) bool masks, or None.
            boxes: (R, 4) XYXY boxes in pixels, or None. With masks, they set the crop boxes
                (default: the masks' extents); alone, each box is a box-only reference whose
                mask SAM 2 makes (MODEL.REFSEG.MEMORY.BOX_MASK_SOURCE).
        Returns:
            dict: the statistics of ``fill_memory``.
        """
        classes = [str(c) for c in ([classes] if isinstance(classes, str) else classes)]
        if masks is None and boxes is None:
            raise ValueError(
                "add_references needs masks or boxes for {} instance(s)".format(len(classes))
            )
        with tempfile.TemporaryDirectory(prefix="refseg_ref_") as tmp:
            if isinstance(image, str):
                file_name, source = image, image
                size = image_size(image, self.cfg.MODEL.REFSEG.INPUT.APPLY_EXIF)
            else:
                pil = self._to_pil(image, "reference image")
                file_name, source, size = os.path.join(tmp, "reference.png"), None, pil.size
                pil.save(file_name)
            names = list(dict.fromkeys(classes))
            annotations = self._annotations(classes, names, masks, boxes, size, source)
            d = {"file_name": file_name, "image_id": 1, "width": size[0], "height": size[1],
                 "annotations": annotations}
            ids = list(range(1, len(names) + 1))
            name = register_reference_dicts(self._temporary_name(), [d], ids, names)
            try:
                return self._fill_and_merge(name, file_name_of={file_name: source})
            finally:
                DatasetCatalog.remove(name)
                MetadataCatalog.remove(name)

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
            if masks is not None:
                mask = masks[r].cpu() if torch.is_tensor(masks[r]) else masks[r]
                mask = np.asarray(mask).astype(bool)
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
                if len(box) != 4 or box[2] <= box[0] or box[3] <= box[1]:
                    raise ValueError("Box {} of {} is not a XYXY box: {}".format(r, what, box))
                ann["bbox"], ann["bbox_mode"] = box, BoxMode.XYXY_ABS
            annotations.append(ann)
        return annotations

    @staticmethod
    def _temporary_name():
        return "_refseg_predictor_refs_{}_{}".format(os.getpid(), next(_temporary_names))

    def add_reference_dataset(self, dataset_name):
        """
        Add every non-crowd annotation of a registered dataset as a reference. Into an empty
        memory the dataset's category ids are kept; otherwise classes are matched by name and
        new ones get new ids at the end. Returns the statistics of ``fill_memory``.
        """
        return self._fill_and_merge(dataset_name)

    def _fill_and_merge(self, dataset_name, file_name_of=None):
        """fill_memory from ``dataset_name``, then put the previous memory's shots back first."""
        before = _snapshot(self.memory, self.provenance)
        stats = fill_memory(self.cfg, self.model, [dataset_name], with_provenance=True)
        provenance = stats.pop("provenance")
        for record in (rec for per_class in provenance for rec in per_class):
            record["file_name"] = (file_name_of or {}).get(record["file_name"], record["file_name"])
        added = _snapshot(self.memory, provenance)
        merged = _merge(before, added) if before else added
        self.memory.set(
            [s["id"] for s in merged], [s["name"] for s in merged], [s["features"] for s in merged]
        )
        self.provenance = [s["provenance"] for s in merged]
        logger.info("Memory now: %s", self.memory.extra_repr())
        return stats

    def save_memory(self, path):
        """Save the memory (with the references' provenance) to ``path`` (a .pth file)."""
        folder, base = os.path.split(os.path.abspath(path))
        name = base[: -len(".pth")] if base.endswith(".pth") else base
        extra = {PROVENANCE_KEY: self.provenance} if any(self.provenance or []) else {}
        os.makedirs(folder, exist_ok=True)
        RefSegCheckpointer(self.model, save_dir=folder).save(name, **extra)
        return os.path.join(folder, name + ".pth")

    def load_memory(self, path):
        """Load a memory saved by :meth:`save_memory`, tools/train_net.py or tools/demo.py."""
        if not os.path.isfile(path):
            raise FileNotFoundError("Memory file not found: {}".format(path))
        rest = RefSegCheckpointer(self.model).load(path)
        self.provenance = rest.get(PROVENANCE_KEY) or [None] * self.memory.num_classes
        return self.memory


def _snapshot(memory, provenance):
    """The memory as a list of per-class dicts: id, name, features (K_c, D), provenance."""
    slots = []
    for c in range(memory.num_classes):
        k = int(memory.counts[c])
        prov = provenance[c] if provenance else None
        if prov is not None and len(prov) == k:
            prov = list(prov)
        elif prov is not None:
            logger.warning(
                "Class %r: %d references recorded but %d in the memory (some covered no encoder "
                "patch); its provenance is dropped", memory.class_names[c], len(prov), k,
            )
            prov = None
        slots.append({
            "id": int(memory.class_ids[c]),
            "name": memory.class_names[c],
            "features": memory.instance_features[c, :k].clone(),
            "provenance": prov,
        })
    return slots


def _merge(before, added):
    """Append ``added`` shots to classes of the same name; new names get new ids at the end."""
    merged = [dict(s) for s in before]
    by_name = {s["name"]: s for s in merged}
    next_id = max(s["id"] for s in merged) + 1
    for slot in added:
        old = by_name.get(slot["name"])
        if old is None:
            merged.append(dict(slot, id=next_id))
            next_id += 1
            continue
        old["features"] = torch.cat([old["features"], slot["features"]])
        both = old["provenance"] is not None and slot["provenance"] is not None
        old["provenance"] = old["provenance"] + slot["provenance"] if both else None
    return merged
