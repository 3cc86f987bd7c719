"""
Ground-truth files that are derived at first use (e.g. restricted to the evaluated classes).

A dataset registers a function that makes sure its COCO-format ground truth exists and returns
its path; evaluators call :func:`prepare_ground_truth` before reading ``metadata.json_file``.
It lives in ``refseg_d2.data`` so that the datasets, which register the functions, do not
import ``refseg_d2.evaluation``, which calls them.
"""
from detectron2.data import MetadataCatalog

_PREPARERS = {}


def register_ground_truth(dataset_name, json_fn):
    """``json_fn()`` writes the ground truth of ``dataset_name`` if needed and returns its path."""
    _PREPARERS[dataset_name] = json_fn


def prepare_ground_truth(dataset_name):
    """
    Returns:
        str or None: the ground-truth JSON of ``dataset_name`` (also set as its metadata
        ``json_file``), or None when the dataset has neither a preparer nor a json_file.
    """
    meta = MetadataCatalog.get(dataset_name)
    fn = _PREPARERS.get(dataset_name)
    if fn is None:
        return meta.get("json_file", None)
    path = fn()
    if meta.get("json_file", None) is None:
        meta.json_file = path
    return path
