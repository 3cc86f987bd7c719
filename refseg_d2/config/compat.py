"""
Configs written for earlier releases: each removed ``MODEL.REFSEG`` key is translated to the key
that replaced it, or dropped when nothing replaces it, with a warning naming the replacement.

Removed key                          Replacement
RANDOM_INIT_SEED                     none (random initialisation uses a fixed seed)
SAM2.DECODER_CHUNK                   POINTS_PER_BATCH (prompts decoded together, both decoders)
UPSAMPLE_CHUNK                       FULL_MASKS.MAX_PIXELS (one pixel budget)
FULL_MASKS.DENSE_MAX_PIXELS          FULL_MASKS.MAX_PIXELS (same value)
FULL_MASKS.MODE                      none (dense on CUDA when within FULL_MASKS.MAX_PIXELS)
ACCEL.COMPILE (True / False)         ACCEL.COMPILE (the backend name / "")
ACCEL.COMPILE_BACKEND                ACCEL.COMPILE
MEMORY.SAVE                          MEMORY.SAVE_NAME ("" when False)
CACHE, CACHE.ENABLED, CACHE.DIR      none (proposals are computed once per image by the sweep)
"""
import logging

logger = logging.getLogger(__name__)

_R = "MODEL.REFSEG."
_DROPPED = {
    _R + "RANDOM_INIT_SEED": "the random initialisation (RANDOM_INIT) always uses seed 0",
    _R + "SAM2.DECODER_CHUNK": "both decoders decode MODEL.REFSEG.POINTS_PER_BATCH prompts "
                               "together; lower it to save memory",
    _R + "UPSAMPLE_CHUNK": "MODEL.REFSEG.FULL_MASKS.MAX_PIXELS bounds the mask upsampling",
    _R + "CACHE": "the proposal cache is gone (a sweep computes each image's proposals once)",
    _R + "CACHE.ENABLED": "the proposal cache is gone (a sweep computes each image's proposals "
                          "once)",
    _R + "CACHE.DIR": "the proposal cache is gone (a sweep computes each image's proposals once)",
}
_MODE = _R + "FULL_MASKS.MODE"
_DENSE_MAX = _R + "FULL_MASKS.DENSE_MAX_PIXELS"
_MAX_PIXELS = _R + "FULL_MASKS.MAX_PIXELS"
_COMPILE = _R + "ACCEL.COMPILE"
_BACKEND = _R + "ACCEL.COMPILE_BACKEND"
_SAVE = _R + "MEMORY.SAVE"
_SAVE_NAME = _R + "MEMORY.SAVE_NAME"
_DEFAULT_BACKEND = "inductor"
_DEFAULT_SAVE_NAME = "refseg_memory"
OLD_KEYS = frozenset(_DROPPED) | {_MODE, _DENSE_MAX, _BACKEND, _SAVE}


def is_old_key(full_key, value):
    """Whether ``full_key`` = ``value`` is a removed key (ACCEL.COMPILE: a bool value)."""
    if full_key == _COMPILE:
        return isinstance(value, bool)
    return full_key in OLD_KEYS


def _get(node, full_key):
    for part in full_key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _warn(old, value, replacement):
    logger.warning("Config key %s (= %r) was removed: %s", old, value, replacement)


def translate_old_keys(old, cfg, given):
    """
    Args:
        old (dict): removed full keys -> values, from one file or one override list.
        cfg (CfgNode): the config they are merged into (its current values).
        given (dict): the other keys of the same file or list (new keys there win).
    Returns:
        list of (full key, value) to merge instead, in the new keys.
    """
    new = []
    for key in sorted(set(old) & set(_DROPPED)):
        _warn(key, old[key], _DROPPED[key] + "; the key is ignored")
    if _MODE in old:
        _warn(_MODE, old[_MODE], "the kept masks are held at once on CUDA when they fit {} "
              "(lower it to stream them) and streamed on CPU; the key is ignored".format(
                  _MAX_PIXELS))
    if _DENSE_MAX in old:
        _warn(_DENSE_MAX, old[_DENSE_MAX], "use {} (same meaning)".format(_MAX_PIXELS))
        new.append((_MAX_PIXELS, old[_DENSE_MAX]))
    if _COMPILE in old:
        backend = old.get(_BACKEND) or _DEFAULT_BACKEND
        value = backend if old[_COMPILE] else ""
        _warn(_COMPILE, old[_COMPILE], "use {} {!r} (the backend name, '' for none)".format(
            _COMPILE, value))
        new.append((_COMPILE, value))
    elif _BACKEND in old:
        current = _get(given, _COMPILE) or _get(cfg, _COMPILE)
        _warn(_BACKEND, old[_BACKEND], "use {} {!r} (the backend name, '' for none)".format(
            _COMPILE, old[_BACKEND]))
        if current:
            new.append((_COMPILE, old[_BACKEND]))
    if _SAVE in old:
        name = _get(given, _SAVE_NAME) or _get(cfg, _SAVE_NAME) or _DEFAULT_SAVE_NAME
        value = name if old[_SAVE] else ""
        _warn(_SAVE, old[_SAVE], "use {} {!r} ('' saves nothing)".format(_SAVE_NAME, value))
        new.append((_SAVE_NAME, value))
    return new
