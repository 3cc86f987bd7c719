"""
The memory bank: per class, the instance prototypes of its references, and where they come from.

It keeps only what inference needs: the (unnormalised) soft-mask-weighted mean feature of each
reference, C x K x D, the number of filled slots per class and the dataset category id of each
class. Class prototypes are derived from them (and cached until the buffers change). Buffer
shapes follow the content, so loading goes through :func:`refseg_d2.modeling.memory.io.
load_memory`, which sizes them first.

A bank is built from :class:`~refseg_d2.modeling.memory.records.ReferenceRecord` s
(:meth:`MemoryBank.from_records`, the only place that does), grown by another bank
(:meth:`MemoryBank.extend`) and handed to a model
(:meth:`refseg_d2.modeling.RefSeg.set_memory`); several banks can serve one model.
"""
import logging
from collections import defaultdict

import torch
import torch.nn as nn

from ..ops import class_prototypes

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1


class MemoryBank(nn.Module):
    """
    Buffers (all persistent, saved in the model's state dict under ``memory.``):
        instance_features: (C, K, D) float32, slot k of class c valid for k < counts[c].
        counts: (C,) int64.
        class_ids: (C,) int64 dataset category ids, sorted; class index = position.
    Attributes (saved next to the buffers by ``save_memory``):
        class_names: list[str] of length C.
        encoder_signature: dict describing the encoder that produced the features.
        provenance: per class, the list of where each of its slots comes from (see
            ``ReferenceRecord.provenance``), or None where unknown.
    """

    def __init__(self, feature_dim=None, encoder_signature=None):
        """
        Args:
            feature_dim (int or None): D. None: taken from the first memory file loaded into it
                (a bank that only reads files, e.g. for reports).
            encoder_signature (dict or None): see ``DinoV2Encoder.signature``.
        """
        super().__init__()
        self.feature_dim = feature_dim
        self.encoder_signature = dict(encoder_signature or {})
        self._prototype_cache = None
        self.allocate(0, 0)

    def allocate(self, num_classes, shots, feature_dim=None):
        """Replace the buffers by empty ones of shape (num_classes, shots, D)."""
        if feature_dim is not None:
            self.feature_dim = feature_dim
        device = self._device()
        dim = self.feature_dim or 0
        self.register_buffer("instance_features", torch.zeros((num_classes, shots, dim), device=device))
        self.register_buffer("counts", torch.zeros((num_classes,), dtype=torch.int64, device=device))
        self.register_buffer("class_ids", torch.zeros((num_classes,), dtype=torch.int64, device=device))
        self.class_names = [""] * num_classes
        self.provenance = [None] * num_classes
        self._prototype_cache = None

    def _device(self):
        buf = getattr(self, "counts", None)
        return buf.device if isinstance(buf, torch.Tensor) else torch.device("cpu")

    @property
    def num_classes(self):
        return self.counts.shape[0]

    @property
    def is_ready(self):
        """True when every class has at least one reference."""
        return self.num_classes > 0 and bool((self.counts > 0).all())

    def set(self, class_ids, class_names, features_per_class, provenance=None):
        """
        Fill the memory.

        Args:
            class_ids (list[int]): sorted dataset category ids.
            class_names (list[str]): their names.
            features_per_class (list[Tensor]): per class, (K_c, D) instance means in
                reference order; K_c >= 1.
            provenance (list or None): per class, K_c provenance records or None.
        """
        class_ids = [int(i) for i in class_ids]
        if class_ids != sorted(class_ids):
            raise ValueError("class_ids must be sorted, got {}".format(class_ids))
        if not (len(class_ids) == len(class_names) == len(features_per_class)):
            raise ValueError(
                "{} class ids, {} names and {} feature sets".format(
                    len(class_ids), len(class_names), len(features_per_class)
                )
            )
        shots = max((f.shape[0] for f in features_per_class), default=0)
        self.allocate(len(class_ids), shots)
        for c, feats in enumerate(features_per_class):
            self.instance_features[c, : feats.shape[0]] = feats.to(self.instance_features)
            self.counts[c] = feats.shape[0]
        self.class_ids.copy_(torch.as_tensor(class_ids, dtype=torch.int64))
        self.class_names = [str(n) for n in class_names]
        self.provenance = self._checked_provenance(provenance)
        return self

    @classmethod
    def from_records(cls, records, class_ids, class_names, like, with_provenance=False):
        """
        The one way a bank is built from encoded references: per class, its valid records in
        the given order. A record whose mask covers no encoder patch sample is skipped with a
        warning naming it.

        Args:
            records (list[ReferenceRecord]): ``label`` indexes ``class_names``.
            class_ids (list[int]): sorted dataset category ids; class_names (list[str]).
            like (MemoryBank): a bank of the encoder that made the records (feature dimension,
                encoder signature and device are taken from it).
            with_provenance (bool): record where each slot comes from (``record.provenance()``).
        Returns:
            MemoryBank: on the device of ``like``.
        Raises:
            ValueError: a class is left without a usable reference.
        """
        per_class, sources = defaultdict(list), defaultdict(list)
        for record in records:
            if not record.valid:
                logger.warning(
                    "Reference %s covers no encoder patch sample: skipped",
                    record.name or "annotation {} of {} (class {})".format(
                        record.annotation_index, record.file_name, class_names[record.label]),
                )
                continue
            per_class[record.label].append(record.feature)
            if with_provenance:
                sources[record.label].append(record.provenance())
        empty = [n for c, n in enumerate(class_names) if not per_class[c]]
        if empty:
            raise ValueError("No usable reference for categories {}".format(empty))
        feats = [torch.stack(per_class[c]) for c in range(len(class_names))]
        prov = [sources[c] for c in range(len(class_names))] if with_provenance else None
        bank = cls(like.feature_dim, like.encoder_signature).to(like._device())
        return bank.set(class_ids, class_names, feats, prov)

    def class_slots(self):
        """
        The memory per class: list (C) of dicts with "id", "name", "features" (K_c, D) (a copy)
        and "provenance" (K_c records or None).
        """
        return [
            {
                "id": int(self.class_ids[c]),
                "name": self.class_names[c],
                "features": self.instance_features[c, : int(self.counts[c])].clone(),
                "provenance": self.provenance[c],
            }
            for c in range(self.num_classes)
        ]

    def extend(self, other):
        """
        Add the references of ``other`` (another bank of the same encoder): classes with a name
        already here get more shots, after the existing ones; new names become new classes at
        the end, with ids after the largest id. Into an empty bank the classes of ``other`` are
        taken as they are. Returns ``self``.
        """
        if self.feature_dim is not None and other.feature_dim != self.feature_dim:
            raise ValueError(
                "Cannot merge a memory of {}-d features into one of {}-d".format(
                    other.feature_dim, self.feature_dim
                )
            )
        slots = [dict(s) for s in self.class_slots()]
        by_name = {s["name"]: s for s in slots}
        next_id = max((s["id"] for s in slots), default=0) + 1
        for new in other.class_slots():
            old = by_name.get(new["name"])
            if old is None:
                slots.append(dict(new, id=new["id"] if not by_name else next_id))
                next_id = max(next_id, slots[-1]["id"]) + 1
                continue
            old["features"] = torch.cat([old["features"], new["features"].to(old["features"])])
            both = old["provenance"] is not None and new["provenance"] is not None
            old["provenance"] = old["provenance"] + new["provenance"] if both else None
        if not by_name:
            slots.sort(key=lambda s: s["id"])
        return self.set(
            [s["id"] for s in slots], [s["name"] for s in slots], [s["features"] for s in slots],
            [s["provenance"] for s in slots],
        )

    def prototypes(self):
        """(C, D) unit-norm class prototypes: normalize(mean_k instance_features[c, k])."""
        if not self.is_ready:
            raise RuntimeError(
                "The memory bank is empty: fill it from DATASETS.REFERENCE or load a memory file "
                "with MODEL.WEIGHTS before running inference"
            )
        key = (
            self.instance_features.data_ptr(), self.instance_features._version,
            self.counts.data_ptr(), self.counts._version, self.instance_features.device,
        )
        if self._prototype_cache is None or self._prototype_cache[0] != key:
            self._prototype_cache = (key, class_prototypes(self.instance_features, self.counts))
        return self._prototype_cache[1]

    def checksum(self):
        """The sum of the features (identical on every process after a distributed fill)."""
        return float(self.instance_features.double().sum())

    def metadata(self):
        """What the checkpointer saves next to the buffers (plain Python types only)."""
        return {
            "class_names": list(self.class_names),
            "class_ids": self.class_ids.tolist(),
            "counts": self.counts.tolist(),
            "encoder": dict(self.encoder_signature),
            "format_version": FORMAT_VERSION,
        }

    def _checked_provenance(self, provenance):
        """Per class, the provenance if it has one record per slot, else None (warned)."""
        if provenance is None:
            return [None] * self.num_classes
        if len(provenance) != self.num_classes:
            raise ValueError(
                "Provenance of {} classes for a memory of {}".format(len(provenance), self.num_classes)
            )
        out = []
        for c, records in enumerate(provenance):
            if records is not None and len(records) != int(self.counts[c]):
                logger.warning(
                    "Class %r: %d reference sources recorded for %d memory slots; its "
                    "provenance is dropped", self.class_names[c], len(records), int(self.counts[c]),
                )
                records = None
            out.append(None if records is None else list(records))
        return out

    def extra_repr(self):
        shots = "{}-{}".format(int(self.counts.min()), int(self.counts.max())) if self.num_classes else 0
        return "classes={}, shots per class={}, dim={}, encoder={}".format(
            self.num_classes, shots, self.feature_dim, self.encoder_signature.get("name")
        )
