"""Reading official checkpoint files, with errors that name the file at fault."""
import contextlib
import os

import torch


def load_state_dict_file(path, what, key=None):
    """
    Read a checkpoint written with ``torch.save`` and return its state dict.

    Args:
        path (str): the file.
        what (str): what the file should hold, for error messages ("SAM 2", "DINOv2 ...").
        key (str or None): the state dict is ``checkpoint[key]`` (SAM 2 files use "model");
            None means the file is the state dict itself (DINOv2 files).
    Returns:
        dict[str, Tensor]
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(
            "{} weights not found: {!r} does not exist. Download the official checkpoint "
            "(tools/download_checkpoints.sh) or fix the WEIGHTS key.".format(what, path)
        )
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError("Cannot read {} weights from {!r}: {}".format(what, path, e)) from e
    if key is not None:
        if not isinstance(checkpoint, dict) or key not in checkpoint:
            found = sorted(checkpoint)[:5] if isinstance(checkpoint, dict) else type(checkpoint)
            raise ValueError(
                "{!r} is not an official {} checkpoint: expected a dict with key {!r}, "
                "found {}".format(path, what, key, found)
            )
        checkpoint = checkpoint[key]
    if not isinstance(checkpoint, dict) or not all(
        isinstance(v, torch.Tensor) for v in checkpoint.values()
    ):
        raise ValueError("{!r} does not hold a {} state dict of tensors".format(path, what))
    return checkpoint


def load_weights_strict(module, state, path, what, config_key):
    """
    ``module.load_state_dict(state)`` that fails with a message naming the file and the config
    key when keys or shapes differ (e.g. weights of another model size).
    """
    try:
        missing, unexpected = module.load_state_dict(state, strict=False)
    except RuntimeError as e:
        raise ValueError("{} does not match {} ({}): {}".format(path, what, config_key, e)) from e
    if missing or unexpected:
        raise ValueError(
            "{} does not hold {} weights ({}): {} missing keys (e.g. {}), {} unexpected keys "
            "(e.g. {})".format(
                path, what, config_key, len(missing), missing[:3], len(unexpected), unexpected[:3]
            )
        )


@contextlib.contextmanager
def random_init_rng(seed):
    """Run a model constructor under a fixed seed without disturbing the global RNG state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield
