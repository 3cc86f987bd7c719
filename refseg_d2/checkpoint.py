"""
Saving and loading the memory bank with Detectron2's checkpointer.

A refseg checkpoint is a Detectron2 checkpoint whose "model" holds only the memory buffers
(``memory.instance_features``, ``memory.counts``, ``memory.class_ids``); the frozen SAM 2 and
DINOv2 weights come from their official files. Next to it, "refseg_memory" records the class
names and the encoder that produced the features.
"""
import logging

from detectron2.checkpoint import DetectionCheckpointer

from .modeling.meta_arch import FROZEN_MODULES

logger = logging.getLogger(__name__)

MEMORY_PREFIX = "memory."


def _unwrap(model):
    return model.module if hasattr(model, "module") else model


class RefSegCheckpointer(DetectionCheckpointer):
    """
    A :class:`DetectionCheckpointer` that (1) saves the memory metadata, (2) resizes the memory
    buffers to the checkpoint's before loading (Detectron2 would otherwise drop tensors of
    another shape with a warning), and (3) refuses a memory built by another encoder or a file
    that holds no memory.
    """

    def save(self, name, **kwargs):
        kwargs.setdefault("refseg_memory", _unwrap(self.model).memory.metadata())
        super().save(name, **kwargs)

    def load(self, path, *args, **kwargs):
        self._path = path
        return super().load(path, *args, **kwargs)

    def _load_model(self, checkpoint):
        path = getattr(self, "_path", "<checkpoint>")
        state = checkpoint.get("model", {})
        memory = _unwrap(self.model).memory
        keys = {k[len(MEMORY_PREFIX):]: v for k, v in state.items() if k.startswith(MEMORY_PREFIX)}
        if "instance_features" not in keys or "counts" not in keys:
            raise ValueError(
                "{} holds no refseg memory (no '{}instance_features'): MODEL.WEIGHTS must be a "
                "memory saved by refseg_d2 (OUTPUT_DIR/refseg_memory.pth). SAM 2 and DINOv2 "
                "weights go in MODEL.REFSEG.SAM2.WEIGHTS and MODEL.REFSEG.ENCODER.WEIGHTS.".format(
                    path, MEMORY_PREFIX
                )
            )
        meta = checkpoint.pop("refseg_memory", None) or {}
        _check_encoder(path, meta.get("encoder"), memory.encoder_signature)
        num_classes, shots, dim = keys["instance_features"].shape
        if dim != memory.feature_dim:
            raise ValueError(
                "The memory in {} has {}-d features; the encoder {} gives {}-d".format(
                    path, dim, memory.encoder_signature.get("name"), memory.feature_dim
                )
            )
        memory.allocate(num_classes, shots)
        incompatible = super()._load_model(checkpoint)
        names = meta.get("class_names")
        memory.class_names = list(names) if names else [str(i) for i in memory.class_ids.tolist()]
        frozen = tuple(m + "." for m in FROZEN_MODULES)
        incompatible.missing_keys[:] = [k for k in incompatible.missing_keys if not k.startswith(frozen)]
        logger.info("Loaded a memory of %d classes from %s", num_classes, path)
        return incompatible


def _check_encoder(path, saved, current):
    if not saved:
        logger.warning("%s records no encoder; assuming it matches %s", path, current.get("name"))
        return
    differ = [
        k for k in ("name", "input_size", "dim")
        if k in saved and saved[k] != current.get(k)
    ]
    fp_saved, fp_now = saved.get("weights_fingerprint"), current.get("weights_fingerprint")
    if fp_saved is not None and fp_now is not None:
        if abs(fp_saved - fp_now) > 1e-6 * max(abs(fp_saved), abs(fp_now), 1.0):
            differ.append("weights")
    if differ:
        raise ValueError(
            "The memory in {} was built with encoder {} but the model uses {} (differs in: {}). "
            "Rebuild the memory from the references with this encoder.".format(
                path, saved, current, ", ".join(differ)
            )
        )
