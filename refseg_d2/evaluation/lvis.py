"""
Detectron2's LVISEvaluator (federated LVIS AP: AP, APr, APc, APf; bbox and segm) runnable with
the ``lvis`` release on PyPI (0.5.3) under NumPy >= 1.24: that release's ``LVISEval.accumulate``
calls ``np.float``, an alias of the builtin ``float`` that NumPy removed (lvis-api issue #37,
fixed on their main branch after 0.5.3).
"""
import contextlib

import numpy as np
from detectron2.evaluation import LVISEvaluator


@contextlib.contextmanager
def numpy_float_alias():
    """Provide ``np.float`` (= ``float``, what the alias was) inside the block when it is absent."""
    added = "float" not in np.__dict__
    if added:
        np.float = float
    try:
        yield
    finally:
        if added:
            del np.float


class RefSegLVISEvaluator(LVISEvaluator):
    """:class:`LVISEvaluator` whose evaluation runs under :func:`numpy_float_alias`."""

    def evaluate(self):
        with numpy_float_alias():
            return super().evaluate()
