"""
The memory bank: per class, the instance prototypes of its references.

It keeps only what inference needs: the (unnormalised) soft-mask-weighted mean feature of each
reference, C x K x D, plus the number of filled slots per class and the dataset category id
of each class. Class prototypes are derived on the fly. Buffer shapes follow the content, so
loading goes through :class:`refseg_d2.checkpoint.RefSegCheckpointer`, which resizes them first.
"""
import torch
import torch.nn as nn

from .ops import class_prototypes


class MemoryBank(nn.Module):
    """
    Buffers (all persistent, saved in the model's state dict under ``memory.``):
        instance_features: (C, K, D) float32, slot k of class c valid for k < counts[c].
        counts: (C,) int64.
        class_ids: (C,) int64 dataset category ids, sorted; class index = position.
    Attributes (saved next to the state dict by the checkpointer):
        class_names: list[str] of length C.
        encoder_signature: dict describing the encoder that produced the features.
    """

    def __init__(self, feature_dim, encoder_signature):
        super().__init__()
        self.feature_dim = feature_dim
        self.encoder_signature = dict(encoder_signature)
        self.class_names = []
        self.allocate(0, 0)

    def allocate(self, num_classes, shots):
        """Replace the buffers by empty ones of shape (num_classes, shots, D)."""
        device = self._device()
        self.register_buffer(
            "instance_features",
            torch.zeros((num_classes, shots, self.feature_dim), device=device),
        )
        self.register_buffer("counts", torch.zeros((num_classes,), dtype=torch.int64, device=device))
        self.register_buffer("class_ids", torch.zeros((num_classes,), dtype=torch.int64, device=device))
        self.class_names = [""] * num_classes

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

    def set(self, class_ids, class_names, features_per_class):
        """
        Fill the memory.

        Args:
            class_ids (list[int]): sorted dataset category ids.
            class_names (list[str]): their names.
            features_per_class (list[Tensor]): per class, (K_c, D) instance means in
                reference order; K_c >= 1.
        """
        if list(class_ids) != sorted(class_ids):
            raise ValueError("class_ids must be sorted, got {}".format(list(class_ids)))
        shots = max((f.shape[0] for f in features_per_class), default=0)
        self.allocate(len(class_ids), shots)
        for c, feats in enumerate(features_per_class):
            self.instance_features[c, : feats.shape[0]] = feats.to(self.instance_features)
            self.counts[c] = feats.shape[0]
        self.class_ids.copy_(torch.as_tensor(list(class_ids), dtype=torch.int64))
        self.class_names = list(class_names)

    def prototypes(self):
        """(C, D) unit-norm class prototypes: normalize(mean_k instance_features[c, k])."""
        if not self.is_ready:
            raise RuntimeError(
                "The memory bank is empty: fill it from DATASETS.REFERENCE or load a memory file "
                "with MODEL.WEIGHTS before running inference"
            )
        return class_prototypes(self.instance_features, self.counts)

    def metadata(self):
        """What the checkpointer saves next to the buffers (plain Python types only)."""
        return {
            "class_names": list(self.class_names),
            "class_ids": self.class_ids.tolist(),
            "counts": self.counts.tolist(),
            "encoder": dict(self.encoder_signature),
            "format_version": 1,
        }

    def extra_repr(self):
        shots = "{}-{}".format(int(self.counts.min()), int(self.counts.max())) if self.num_classes else 0
        return "classes={}, shots per class={}, dim={}, encoder={}".format(
            self.num_classes, shots, self.feature_dim, self.encoder_signature.get("name")
        )
