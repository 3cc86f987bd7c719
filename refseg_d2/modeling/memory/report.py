"""
Reference-quality report of a saved memory: classes, shots, the cosine similarity between class
prototypes and each reference's leave-one-out similarity to the rest of its class, with outliers
flagged. Everything is computed from the instance means the memory holds (no model is built and
no image is read).

Shape shorthand: C classes, K shot slots, D feature dimension.
"""
import math

import torch
import torch.nn.functional as F

from ..ops import class_prototypes


def prototype_similarity(instance_features, counts):
    """
    Args:
        instance_features: (C, K, D); counts: (C,).
    Returns:
        (C, C) cosine similarity between the class prototypes.
    """
    protos = class_prototypes(instance_features, counts)
    return protos @ protos.t()


def leave_one_out(instance_features, counts):
    """
    Each reference against the rest of the memory.

    Args:
        instance_features: (C, K, D); counts: (C,).
    Returns:
        dict of (C, K) tensors, NaN / -1 at empty slots:
            "loo": cosine to the normalised mean of the other references of its class (NaN for a
                class with one shot);
            "own": cosine to its class prototype (itself included);
            "other": the highest cosine to another class's prototype;
            "other_class": that class's index (-1 with a single class).
    """
    num_classes, shots, _ = instance_features.shape
    slots = torch.arange(shots)[None, :] < counts[:, None]
    feats = instance_features * slots[..., None]
    total = feats.sum(dim=1, keepdim=True)
    rest = F.normalize(total - feats, dim=-1)
    unit = F.normalize(instance_features, dim=-1)
    loo = (unit * rest).sum(dim=-1)
    loo[(counts < 2)[:, None].expand_as(loo)] = float("nan")
    protos = class_prototypes(instance_features, counts)
    sims = torch.einsum("ckd,jd->ckj", unit, protos)
    own = sims.gather(2, torch.arange(num_classes)[:, None, None].expand(-1, shots, 1))[..., 0]
    if num_classes > 1:
        sims[torch.arange(num_classes), :, torch.arange(num_classes)] = float("-inf")
        other, other_class = sims.max(dim=2)
    else:
        other = torch.full_like(own, float("nan"))
        other_class = torch.full_like(counts[:, None].expand(-1, shots), -1)
    empty = ~slots
    for t in (loo, own, other):
        t[empty] = float("nan")
    other_class = other_class.masked_fill(empty, -1)
    return {"loo": loo, "own": own, "other": other, "other_class": other_class}


def flag_outliers(loo, counts, other, z_thresh=3.0, min_spread=0.05):
    """
    Outlier references, per slot a list of reasons (empty: not flagged).

    A reference is flagged "closer to another class" when it is more similar to another class's
    prototype than to the rest of its own class, and "low" when its leave-one-out similarity is
    more than ``z_thresh`` robust standard deviations (1.4826 x median absolute deviation, at
    least ``min_spread``, so that a tight class does not flag negligible differences) below its
    class median (classes with 3 shots or more).

    Args:
        loo, other: (C, K) from :func:`leave_one_out`; counts: (C,).
    Returns:
        list (C) of lists (K_c) of lists of str.
    """
    flags = []
    for c in range(len(counts)):
        k = int(counts[c])
        values = loo[c, :k]
        median = values.median() if k >= 3 else None
        spread = 1.4826 * (values - median).abs().median() if k >= 3 else None
        per_class = []
        for s in range(k):
            reasons = []
            if k >= 2 and float(other[c, s]) > float(values[s]):
                reasons.append("closer to another class")
            if median is not None:
                z = float((values[s] - median) / spread.clamp(min=min_spread))
                if z < -z_thresh:
                    reasons.append("low (z = {:.1f})".format(z))
            per_class.append(reasons)
        flags.append(per_class)
    return flags


def _number(value):
    value = float(value)
    return None if math.isnan(value) else round(value, 6)


def build_report(memory, provenance=None, z_thresh=3.0, top_pairs=10):
    """
    The report as plain Python types (JSON-ready).

    Args:
        memory (MemoryBank).
        provenance (list or None): per class, the sources of its slots; default: the memory's.

    Returns:
        dict with "classes" (id, name, shots), "encoder", "prototype_similarity" (C x C),
        "most_similar_pairs" (the ``top_pairs`` most similar class pairs) and "references":
        per class, per shot, its "loo", "own", "other" similarities, "nearest_other_class",
        "flags" and, when known, its "source" (file name, annotation, crop window).
    """
    feats, counts = memory.instance_features.float().cpu(), memory.counts.cpu()
    names, ids = list(memory.class_names), memory.class_ids.tolist()
    sim = prototype_similarity(feats, counts)
    stats = leave_one_out(feats, counts)
    flags = flag_outliers(stats["loo"], counts, stats["other"], z_thresh)
    pairs = [(i, j) for i in range(len(names)) for j in range(i + 1, len(names))]
    pairs.sort(key=lambda p: -float(sim[p]))
    references = []
    for c, name in enumerate(names):
        prov = (provenance or memory.provenance or [None] * len(names))[c]
        shots = []
        for s in range(int(counts[c])):
            other_class = int(stats["other_class"][c, s])
            shot = {
                "slot": s,
                "loo": _number(stats["loo"][c, s]),
                "own": _number(stats["own"][c, s]),
                "other": _number(stats["other"][c, s]),
                "nearest_other_class": names[other_class] if other_class >= 0 else None,
                "flags": flags[c][s],
            }
            if prov is not None:
                record = prov[s]
                keys = ("file_name", "annotation", "crop_window")
                shot["source"] = {k: record.get(k) for k in keys}
            shots.append(shot)
        references.append({"class": name, "id": ids[c], "shots": shots})
    return {
        "classes": [
            {"id": i, "name": n, "shots": int(k)} for i, n, k in zip(ids, names, counts.tolist())
        ],
        "encoder": dict(memory.encoder_signature),
        "prototype_similarity": [[round(float(v), 6) for v in row] for row in sim],
        "most_similar_pairs": [
            {"classes": [names[i], names[j]], "cosine": round(float(sim[i, j]), 6)}
            for i, j in pairs[:top_pairs]
        ],
        "references": references,
        "z_thresh": z_thresh,
    }


def format_report(report):
    """The report as text tables (classes, most similar class pairs, flagged references)."""
    from tabulate import tabulate

    def fmt(value):
        return "-" if value is None else "{:.3f}".format(value)

    lines = ["Memory: {} classes, encoder {}".format(
        len(report["classes"]), report["encoder"].get("name", "?"))]
    rows = []
    for cls, refs in zip(report["classes"], report["references"]):
        loos = [s["loo"] for s in refs["shots"] if s["loo"] is not None]
        rows.append([cls["id"], cls["name"], cls["shots"],
                     fmt(sum(loos) / len(loos)) if loos else "-",
                     fmt(min(loos)) if loos else "-",
                     sum(1 for s in refs["shots"] if s["flags"])])
    lines.append(tabulate(rows, headers=["id", "class", "shots", "mean LOO", "min LOO", "flagged"]))
    if report["most_similar_pairs"]:
        lines.append("\nMost similar class prototypes:")
        lines.append(tabulate([[p["classes"][0], p["classes"][1], fmt(p["cosine"])]
                               for p in report["most_similar_pairs"]],
                              headers=["class", "class", "cosine"]))
    flagged = [
        [refs["class"], s["slot"], fmt(s["loo"]), fmt(s["other"]), s["nearest_other_class"],
         "; ".join(s["flags"]), (s.get("source") or {}).get("file_name") or "-"]
        for refs in report["references"] for s in refs["shots"] if s["flags"]
    ]
    lines.append("\nFlagged references: {}".format(len(flagged)))
    if flagged:
        lines.append(tabulate(flagged, headers=["class", "shot", "LOO", "best other", "other class",
                                                "why", "image"]))
    return "\n".join(lines)
