"""
Registers the benchmark datasets of refseg_d2 (COCO-FSOD, PASCAL VOC few-shot, CD-FSOD,
COCO-20i, the fine-tuned baselines' protocols: TFA/FsDet COCO seed files, gFSOD, LVIS v1) under the dataset root ``$DETECTRON2_DATASETS`` (default ``datasets``), as
Detectron2's own ``builtin.py`` does. Registration opens no file: every file is read, converted
or sampled when its dataset is first used, and a missing one is an error naming its path.

Import registers every test set, the unseeded reference sets (CD-FSOD, FSOD-VFM's support files:
``fsod_vfm.py``) and the seeded
reference sets of the paper's seeds only: COCO-FSOD ``coco_fsod.PAPER_SEEDS``, VOC sampled sets
``voc_fewshot.PAPER_SEED`` (33), COCO-20i ``coco20i.PAPER_SEED`` (42) and the TFA/FsDet VOC seed
files ``voc_fewshot.TFA_SEEDS`` (0-9), the TFA/FsDet COCO seed files ``coco_tfa.FSDET_SEEDS``
(0-9, all FsDet has: other seeds are an error), the gFSOD sampled sets (``coco_fsod.PAPER_SEEDS``)
and LVIS ``lvis.PAPER_SEED`` (42), each for every shot count of its benchmark. Any other
seed or shot count of those names is registered on demand, under the same root:

- :func:`resolve_datasets` registers the seeded names of a list that are not registered yet
  and leaves any other name alone (the engine calls it for the reference and test datasets of
  a config, so ``tools/train_net.py`` and ``tools/sweep.py`` take any seed);
- code that calls ``DatasetCatalog.get`` itself calls :func:`register_reference_dataset`
  first, e.g. ``register_reference_dataset("coco_fsod_train_novel_7shot_seed1234")``.

Use it for the benchmarks only; register your own data with ``register_coco_instances`` (or
``tools/train_net.py --register``).
"""
import re

from detectron2.data import DatasetCatalog

from .cdfsod import register_cdfsod
from .coco20i import register_coco20i, register_coco20i_references
from .coco_fsod import register_coco_fsod, register_coco_fsod_references
from .coco_gfsod import register_coco_fsod_all_references, register_coco_gfsod
from .coco_tfa import register_coco_tfa, register_coco_tfa_all, register_coco_tfa_novel
from .common import datasets_root
from .lvis import register_lvis_references, register_lvis_v1
from .fsod_vfm import register_fsod_vfm
from .voc_fewshot import register_tfa_references, register_voc_fewshot, register_voc_references

# Shot counts from 1 and seeds without leading zeros, so that the registered name (made from the
# integers) is the name asked for.
_SHOTS = r"([1-9]\d*)shot"
_SEED = r"seed(0|[1-9]\d*)"

# seeded reference set name -> register(root, *integers of the name)
_SEEDED_PATTERNS = (
    (re.compile(r"coco_fsod_train_novel_{}_{}$".format(_SHOTS, _SEED)),
     register_coco_fsod_references),
    (re.compile(r"coco20i_split([1-4])_train_{}_{}$".format(_SHOTS, _SEED)),
     register_coco20i_references),
    (re.compile(r"voc_fewshot_split([1-3])_trainval_novel_{}_{}$".format(_SHOTS, _SEED)),
     register_voc_references),
    (re.compile(r"voc_tfa_split([1-3])_novel_{}_{}$".format(_SHOTS, _SEED)),
     register_tfa_references),
    (re.compile(r"coco_fsod_train_all_{}_{}$".format(_SHOTS, _SEED)),
     register_coco_fsod_all_references),
    (re.compile(r"coco_tfa_novel_{}_{}$".format(_SHOTS, _SEED)), register_coco_tfa_novel),
    (re.compile(r"coco_tfa_all_{}_{}$".format(_SHOTS, _SEED)), register_coco_tfa_all),
    (re.compile(r"lvis_v1_train_{}_{}$".format(_SHOTS, _SEED)), register_lvis_references),
)


# The dataset root of the latest register_all, where names registered on demand go too.
_REGISTERED = {}


def register_all(root):
    """
    Register under ``root`` every benchmark test set, the unseeded reference sets and the
    seeded reference sets of the paper's seeds (see the module docstring). Seeded names
    registered on demand afterwards use the same root.
    """
    register_coco_fsod(root)
    register_voc_fewshot(root)
    register_cdfsod(root)
    register_fsod_vfm(root)
    register_coco20i(root)
    register_coco_tfa(root)
    register_coco_gfsod(root)
    register_lvis_v1(root)
    _REGISTERED["root"] = root


def benchmark_root():
    """The dataset root of the latest :func:`register_all` (on import, ``$DETECTRON2_DATASETS``)."""
    return _REGISTERED.get("root") or datasets_root()


def _seeded_registration(name):
    """
    Returns:
        (register, integers) when ``name`` is a seeded reference set name, else None.
    """
    for pattern, register in _SEEDED_PATTERNS:
        match = pattern.match(name)
        if match:
            return register, tuple(int(g) for g in match.groups())
    return None


def register_reference_dataset(name, root=None):
    """
    Register a seeded reference set of any shot count and seed by its name, e.g.
    ``coco_fsod_train_novel_7shot_seed1234`` or ``voc_tfa_split1_novel_10shot_seed29``, under
    ``root`` (default :func:`benchmark_root`, where the other benchmark datasets are). A
    registered name is left as it is. Opens no file.

    Returns:
        str: ``name``.
    Raises:
        ValueError: ``name`` is not registered and is no seeded reference set name.
    """
    if name in DatasetCatalog:
        return name
    found = _seeded_registration(name)
    if found is None:
        raise ValueError(
            "{!r} is not the name of a sampled reference set (patterns: {})".format(
                name, [p.pattern for p, _ in _SEEDED_PATTERNS]
            )
        )
    register, integers = found
    register(root or benchmark_root(), *integers)
    return name


def resolve_datasets(names, root=None):
    """
    Make the seeded reference sets among ``names`` available: each name that is not registered
    and is a seeded reference set name is registered (:func:`register_reference_dataset`, under
    ``root``, default :func:`benchmark_root`); every other name is left alone (an unknown one
    still fails where it is used). Opens no file.

    Returns:
        list[str]: ``names``, unchanged.
    """
    names = list(names)
    for name in names:
        if name not in DatasetCatalog and _seeded_registration(name) is not None:
            register_reference_dataset(name, root)
    return names


def unregistered(names, root=None):
    """
    The names among ``names`` that are not registered datasets once the seeded reference sets
    among them are (:func:`resolve_datasets`), in order. Opens no file.
    """
    return [name for name in resolve_datasets(names, root) if name not in DatasetCatalog]


if __name__.endswith(".builtin"):
    # Registered on import, without reading anything (the path may not exist yet).
    register_all(datasets_root())
