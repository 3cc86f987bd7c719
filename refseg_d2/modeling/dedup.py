"""
De-duplication of the classified proposals of one image (``MODEL.REFSEG.DEDUP.NAME``): a
registered function that decays the scores of masks that repeat earlier masks of their class.

The registered object is called with ``obj(cfg)`` and returns a callable
``dedup(overlaps, labels, features, scores) -> (n,) decayed scores`` where the n masks are in
ranking order, ``overlaps(idx)`` gives the (k, k) intersection-over-self matrix of the masks
``idx`` ([a, b] = |M_a ∩ M_b| / |M_a|, see ``ops.dense_self_overlaps``), ``labels`` (n,) are class
indices, ``features`` (n, D) unit pooled features and ``scores`` (n,) the class scores.

- "soft_merge": the semantic-aware soft merging of "No Time to Train!"
  (``ops.semantic_soft_merge_overlaps``, exponent ``MERGE_EXPONENT``).
- "graph_diffusion": FSOD-VFM's graph diffusion (:func:`graph_diffusion`).
"""
import torch
from detectron2.utils.registry import Registry

from ..config import declare_choices
from ..utils.registry import register_as, registered
from . import ops

REFSEG_DEDUP_REGISTRY = Registry("REFSEG_DEDUP")
REFSEG_DEDUP_REGISTRY.__doc__ = __doc__

DEDUP_MASKS = declare_choices("DEDUP.MASKS", ("pooling", "full"))


def graph_diffusion(overlaps, labels, scores, alpha=0.3, decay_exponent=0.5, steps=30, tol=1e-6,
                    row_normalize=False):
    """
    FSOD-VFM's graph diffusion of intersection-over-self, per class, masks in ranking order.

    For the n masks of a class: A[i, j] = |M_i ∩ M_j| / max(|M_i|, 1e-6) for j < i (0 on and
    above the diagonal); v_i = max_j A[i, j]; P = A (the authors' code divides each row by a
    boolean, i.e. by one), or, with ``row_normalize``, each non-zero row of A divided by its sum;
    pi starts at 1 / n and is iterated ``steps`` times, pi <- alpha P pi + (1 - alpha) v,
    stopping once an iteration changes pi by less than ``tol`` (L2). The new score is
    score * max(0, 1 - pi) ** decay_exponent, in float32. When only one mask is given in all, its
    pi is 0. ``steps`` = 0 leaves pi = 1 / n (the authors' code does the same).

    Args:
        overlaps: function idx (k,) -> (k, k) intersection over self, see the module docstring.
        labels: (n,) int64 classes; scores: (n,) float.
        alpha, decay_exponent, steps, tol, row_normalize: as above (DEDUP.ALPHA, DEDUP.LAMBDA,
            DEDUP.STEPS, DEDUP.TOL, DEDUP.ROW_NORMALIZE).
    Returns:
        (n,) float32 decayed scores.
    """
    n = labels.shape[0]
    pi_all = torch.zeros(n, dtype=torch.float32, device=scores.device)
    if n > 1:
        for label in torch.unique(labels).tolist():
            idx = torch.nonzero(labels == label, as_tuple=True)[0]
            pi_all[idx] = _diffuse(overlaps(idx).to(pi_all), alpha, steps, tol, row_normalize)
    factor = torch.pow((1.0 - pi_all).clamp(min=0.0), decay_exponent)
    return scores.to(torch.float32) * factor


def _diffuse(ios, alpha, steps, tol, row_normalize):
    """ios (k, k) float32 intersection over self -> (k,) stationary pi of one class."""
    k = ios.shape[0]
    a = torch.tril(ios, diagonal=-1)
    v = a.max(dim=1).values
    p = a
    if row_normalize:
        sums = a.sum(dim=1, keepdim=True)
        p = torch.where(sums > 1e-10, a / sums.clamp(min=1e-10), torch.zeros_like(a))
    pi = torch.full((k,), 1.0 / k, dtype=ios.dtype, device=ios.device)
    for _ in range(steps):
        previous = pi
        pi = alpha * (p @ pi) + (1 - alpha) * v
        if torch.linalg.vector_norm(pi - previous) < tol:
            break
    return pi


@register_as(REFSEG_DEDUP_REGISTRY, "soft_merge")
def soft_merge(cfg):
    """Semantic-aware soft merging (NTT), exponent MODEL.REFSEG.MERGE_EXPONENT."""
    exponent = cfg.MODEL.REFSEG.MERGE_EXPONENT

    def dedup(overlaps, labels, features, scores):
        return ops.semantic_soft_merge_overlaps(overlaps, labels, features, scores, exponent)

    return dedup


@register_as(REFSEG_DEDUP_REGISTRY, "graph_diffusion")
def build_graph_diffusion(cfg):
    """FSOD-VFM's graph diffusion with the MODEL.REFSEG.DEDUP parameters."""
    d = cfg.MODEL.REFSEG.DEDUP

    def dedup(overlaps, labels, features, scores):
        return graph_diffusion(overlaps, labels, scores, d.ALPHA, d.LAMBDA, d.STEPS, d.TOL,
                               d.ROW_NORMALIZE)

    return dedup


def build_dedup(cfg):
    """The de-duplication named by ``MODEL.REFSEG.DEDUP.NAME``."""
    name = cfg.MODEL.REFSEG.DEDUP.NAME
    return registered(REFSEG_DEDUP_REGISTRY, "MODEL.REFSEG.DEDUP.NAME", name)(cfg)
