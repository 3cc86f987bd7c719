"""
Saving and loading memory banks.

A memory file is a ``torch.save`` d dict in Detectron2's checkpoint layout: "model" holds only
the memory buffers (``memory.instance_features``, ``memory.counts``, ``memory.class_ids``); the
frozen SAM 2 and DINOv2 weights come from their official files. Next to it, "refseg_memory"
records the class names and the encoder that produced the features, and "refseg_references"
(optional) where each slot comes from.

- :func:`save_memory` / :func:`load_memory` are the one way a :class:`MemoryBank` is written and
  read (no model is built; a loaded bank can be handed to any model of the same encoder).
- :class:`RefSegCheckpointer` is Detectron2's checkpointer for a model's memory
  (``MODEL.WEIGHTS``, train_net); it saves and loads through them.
"""
import logging
import os

import torch
from detectron2.checkpoint import DetectionCheckpointer

from ...utils.distributed import unwrap_model
from ...utils.files import atomic_write
from .bank import MemoryBank

logger = logging.getLogger(__name__)

MEMORY_PREFIX = "memory."
METADATA_KEY = "refseg_memory"
PROVENANCE_KEY = "refseg_references"
BUFFERS = ("instance_features", "counts", "class_ids")


def save_memory(bank, path):
    """
    Save ``bank`` to ``path`` (".pth" is appended when missing; folders are created) through
    :func:`~refseg_d2.utils.files.atomic_write`: a reader sees the old file or the new one,
    concurrent savers do not disturb each other, and a failure (e.g. a full disk) leaves the old
    file, no temporary one, and raises "Cannot save the memory to <path>: <reason>".

    Returns:
        str: the path written (absolute).
    """
    path = os.path.abspath(path)
    if not path.endswith(".pth"):
        path += ".pth"
    checkpoint = {
        "model": {MEMORY_PREFIX + k: v.detach().cpu() for k, v in bank.state_dict().items()},
        METADATA_KEY: bank.metadata(),
    }
    if any(p is not None for p in bank.provenance):
        checkpoint[PROVENANCE_KEY] = bank.provenance
    atomic_write(path, lambda f: torch.save(checkpoint, f), mode="wb", what="the memory")
    return path


def read_memory_file(path):
    """
    The checkpoint dict of a memory file. Only tensors and plain Python values are read (no code
    is unpickled).

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file cannot be read (truncated, or not a memory file), naming it and its
            size.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError("Memory file not found: {}".format(path))
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(
            "Cannot read memory file {} ({} bytes): it is truncated or not a memory file "
            "({}: {})".format(path, os.path.getsize(path), type(e).__name__, e)
        ) from e
    if not isinstance(checkpoint, dict):
        raise ValueError("Memory file {} holds a {}, not a checkpoint dict".format(
            path, type(checkpoint).__name__))
    return checkpoint


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
    checkpoint = read_memory_file(path)
    state = checkpoint.get("model", {})
    state = state if isinstance(state, dict) else {}
    keys = {k[len(MEMORY_PREFIX):]: v for k, v in state.items() if k.startswith(MEMORY_PREFIX)}
    if "instance_features" not in keys or "counts" not in keys:
        raise ValueError(
            "{} holds no refseg memory (no '{}instance_features'): MODEL.WEIGHTS must be a "
            "memory saved by refseg_d2 (OUTPUT_DIR/refseg_memory.pth). SAM 2 and DINOv2 "
            "weights go in MODEL.REFSEG.SAM2.WEIGHTS and MODEL.REFSEG.ENCODER.WEIGHTS.".format(
                path, MEMORY_PREFIX
            )
        )
    meta = checkpoint.get(METADATA_KEY) or {}
    num_classes, shots, dim = keys["instance_features"].shape
    if like is None:
        bank = MemoryBank(dim, meta.get("encoder"))
    else:
        _check_encoder(path, meta.get("encoder"), like.encoder_signature)
        if dim != like.feature_dim:
            raise ValueError(
                "The memory in {} has {}-d features; the encoder {} gives {}-d".format(
                    path, dim, like.encoder_signature.get("name"), like.feature_dim
                )
            )
        bank = MemoryBank(like.feature_dim, like.encoder_signature)
    bank.allocate(num_classes, shots)
    for name in BUFFERS:
        if name not in keys:
            logger.warning("%s has no '%s%s': left at zeros", path, MEMORY_PREFIX, name)
            continue
        buffer = getattr(bank, name)
        if tuple(keys[name].shape) != tuple(buffer.shape):
            raise ValueError("{}: '{}{}' has shape {}, expected {}".format(
                path, MEMORY_PREFIX, name, tuple(keys[name].shape), tuple(buffer.shape)))
        buffer.copy_(keys[name])
    names = meta.get("class_names")
    bank.class_names = list(names) if names else [str(i) for i in bank.class_ids.tolist()]
    provenance = checkpoint.get(PROVENANCE_KEY)
    if provenance is not None and len(provenance) != num_classes:
        raise ValueError(
            "{}: '{}' describes {} classes but the memory has {}".format(
                path, PROVENANCE_KEY, len(provenance), num_classes
            )
        )
    bank.provenance = bank._checked_provenance(provenance)
    logger.info("Loaded a memory of %d classes from %s", num_classes, path)
    return bank


class RefSegCheckpointer(DetectionCheckpointer):
    """
    A :class:`DetectionCheckpointer` for ``model.memory``: :meth:`save` writes it with
    :func:`save_memory`, :meth:`load` reads it with :func:`load_memory` (refusing a memory built
    by another encoder or a file that holds no memory) and hands it to ``model.set_memory``.
    """

    def save(self, name, **kwargs):
        """Save the model's memory to ``<save_dir>/<name>.pth`` (see :func:`save_memory`)."""
        if not self.save_dir or not self.save_to_disk:
            return
        save_memory(unwrap_model(self.model).memory, os.path.join(self.save_dir, name + ".pth"))
        self.tag_last_checkpoint(name + ".pth")

    def load(self, path, checkpointables=None):
        """Load the memory file ``path`` into the model (nothing when ``path`` is empty)."""
        if not path:
            logger.info("No memory file given: the memory is filled from the references")
            return {}
        model = unwrap_model(self.model)
        model.set_memory(load_memory(path, like=model.memory))
        return {}


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
