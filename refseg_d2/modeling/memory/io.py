"""
Saving and loading memory banks with Detectron2's checkpointer.

A memory file is a Detectron2 checkpoint whose "model" holds only the memory buffers
(``memory.instance_features``, ``memory.counts``, ``memory.class_ids``); the frozen SAM 2 and
DINOv2 weights come from their official files. Next to it, "refseg_memory" records the class
names and the encoder that produced the features, and "refseg_references" (optional) where each
slot comes from.

- :class:`RefSegCheckpointer` loads into and saves from a model (``MODEL.WEIGHTS``, train_net).
- :func:`save_memory` / :func:`load_memory` save and load a :class:`MemoryBank` on its own
  (no model is built; a loaded bank can be handed to any model of the same encoder).
"""
import logging
import os

import torch
import torch.nn as nn
from detectron2.checkpoint import DetectionCheckpointer

from ...utils.distributed import unwrap_model
from .bank import MemoryBank

logger = logging.getLogger(__name__)

MEMORY_PREFIX = "memory."
METADATA_KEY = "refseg_memory"
PROVENANCE_KEY = "refseg_references"


class RefSegCheckpointer(DetectionCheckpointer):
    """
    A :class:`DetectionCheckpointer` for ``model.memory`` that (1) saves the memory metadata
    and provenance, (2) resizes the memory buffers to the checkpoint's before loading
    (Detectron2 would otherwise drop tensors of another shape with a warning), and (3) refuses
    a memory built by another encoder or a file that holds no memory.
    """

    def save(self, name, **kwargs):
        """
        Save to ``<save_dir>/<name>.pth`` atomically: Detectron2 writes ``<name>.partial.pth``,
        which is then renamed, so a process killed while saving never leaves a half-written
        memory under the real name.
        """
        if not self.save_dir or not self.save_to_disk:
            return
        memory = unwrap_model(self.model).memory
        kwargs.setdefault(METADATA_KEY, memory.metadata())
        if any(p is not None for p in memory.provenance):
            kwargs.setdefault(PROVENANCE_KEY, memory.provenance)
        partial = name + ".partial"
        super().save(partial, **kwargs)
        os.replace(os.path.join(self.save_dir, partial + ".pth"),
                   os.path.join(self.save_dir, name + ".pth"))
        self.tag_last_checkpoint(name + ".pth")

    def load(self, path, *args, **kwargs):
        self._path = path
        return super().load(path, *args, **kwargs)

    def _load_file(self, filename):
        try:
            return super()._load_file(filename)
        except Exception as e:
            raise ValueError("Cannot read memory file {}: {}".format(filename, e)) from e

    def _torch_load(self, f):
        """Memory files hold tensors and plain Python values only: never unpickle code."""
        return torch.load(f, map_location="cpu", weights_only=True)

    def _load_model(self, checkpoint):
        path = getattr(self, "_path", "<checkpoint>")
        state = checkpoint.get("model", {}) if isinstance(checkpoint, dict) else {}
        memory = unwrap_model(self.model).memory
        keys = {k[len(MEMORY_PREFIX):]: v for k, v in state.items() if k.startswith(MEMORY_PREFIX)}
        if "instance_features" not in keys or "counts" not in keys:
            raise ValueError(
                "{} holds no refseg memory (no '{}instance_features'): MODEL.WEIGHTS must be a "
                "memory saved by refseg_d2 (OUTPUT_DIR/refseg_memory.pth). SAM 2 and DINOv2 "
                "weights go in MODEL.REFSEG.SAM2.WEIGHTS and MODEL.REFSEG.ENCODER.WEIGHTS.".format(
                    path, MEMORY_PREFIX
                )
            )
        meta = checkpoint.pop(METADATA_KEY, None) or {}
        num_classes, shots, dim = keys["instance_features"].shape
        if memory.feature_dim is None:
            memory.encoder_signature = dict(meta.get("encoder") or {})
        else:
            _check_encoder(path, meta.get("encoder"), memory.encoder_signature)
            if dim != memory.feature_dim:
                raise ValueError(
                    "The memory in {} has {}-d features; the encoder {} gives {}-d".format(
                        path, dim, memory.encoder_signature.get("name"), memory.feature_dim
                    )
                )
        memory.allocate(num_classes, shots, feature_dim=dim)
        incompatible = super()._load_model(checkpoint)
        names = meta.get("class_names")
        memory.class_names = list(names) if names else [str(i) for i in memory.class_ids.tolist()]
        provenance = checkpoint.get(PROVENANCE_KEY)
        if provenance is not None and len(provenance) != num_classes:
            raise ValueError(
                "{}: '{}' describes {} classes but the memory has {}".format(
                    path, PROVENANCE_KEY, len(provenance), num_classes
                )
            )
        memory.provenance = memory._checked_provenance(provenance)
        incompatible.missing_keys[:] = [
            k for k in incompatible.missing_keys if k.startswith(MEMORY_PREFIX)
        ]
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


class _MemoryHolder(nn.Module):
    """The smallest model the checkpointer reads a memory with (no SAM 2, no DINOv2)."""

    def __init__(self, memory):
        super().__init__()
        self.memory = memory


def load_memory(path, like=None):
    """
    Read a memory file into a new :class:`MemoryBank` (the file is read once).

    Args:
        path (str): a file saved by :func:`save_memory`, tools/train_net.py or RefSegPredictor.
        like (MemoryBank or None): a bank of the encoder that will use the memory; the file is
            refused when it was built by another encoder. None: any encoder (reports).
    Returns:
        MemoryBank on CPU.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError("Memory file not found: {}".format(path))
    bank = MemoryBank() if like is None else MemoryBank(like.feature_dim, like.encoder_signature)
    RefSegCheckpointer(_MemoryHolder(bank)).load(path)
    return bank


def save_memory(bank, path):
    """
    Save ``bank`` to ``path`` (a .pth file; folders are created).

    Returns:
        str: the path written.
    """
    folder, base = os.path.split(os.path.abspath(path))
    name = base[: -len(".pth")] if base.endswith(".pth") else base
    os.makedirs(folder, exist_ok=True)
    RefSegCheckpointer(_MemoryHolder(bank), save_dir=folder).save(name)
    return os.path.join(folder, name + ".pth")
