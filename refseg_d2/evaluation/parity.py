"""
Prediction-for-prediction comparison of two COCO-style result lists of the same test images,
for parity checks against another implementation (``tools/fsod_vfm_parity.py``).

Each prediction is a dict with ``image_id``, ``category_id``, ``bbox`` (XYWH) and ``score``;
other keys (``segmentation``) are ignored. Per image, predictions are paired when they have the
same class and the same box (within ``box_tol`` per coordinate, so integer boxes written as
floats still pair), each with the partner of nearest score. A pair is *matched* when its scores
differ by at most ``score_tol``.
"""
from collections import defaultdict

__all__ = ["compare_predictions", "summary_line"]


def _box_key(pred, box_tol):
    """(category_id, box rounded to a multiple of ``box_tol``): the pairing key."""
    return (int(pred["category_id"]),) + tuple(int(round(float(v) / box_tol)) for v in pred["bbox"])


def _by_image(predictions):
    grouped = defaultdict(list)
    for p in predictions:
        grouped[int(p["image_id"])].append(p)
    return grouped


def _pair_scores(a, b):
    """
    Pair two lists of scores, nearest first (greedy on the smallest absolute difference).
    Returns (the (score_a, score_b) pairs, the unpaired scores of a, those of b).
    """
    candidates = sorted(
        (abs(sa - sb), i, j) for i, sa in enumerate(a) for j, sb in enumerate(b)
    )
    used_a, used_b, pairs = set(), set(), []
    for _, i, j in candidates:
        if i not in used_a and j not in used_b:
            used_a.add(i)
            used_b.add(j)
            pairs.append((a[i], b[j]))
    return (pairs, [s for i, s in enumerate(a) if i not in used_a],
            [s for j, s in enumerate(b) if j not in used_b])


def _compare_image(theirs, ours, score_tol, box_tol):
    """
    One image: (pairs as (key, score theirs, score ours), matched count, unpaired of theirs as
    (key, score), unpaired of ours).
    """
    keyed_t, keyed_o = defaultdict(list), defaultdict(list)
    for p in theirs:
        keyed_t[_box_key(p, box_tol)].append(float(p["score"]))
    for p in ours:
        keyed_o[_box_key(p, box_tol)].append(float(p["score"]))
    pairs, left_t, left_o = [], [], []
    for key in sorted(keyed_t.keys() | keyed_o.keys()):
        paired, rest_t, rest_o = _pair_scores(keyed_t.get(key, []), keyed_o.get(key, []))
        pairs.extend((key, st, so) for st, so in paired)
        left_t.extend((key, s) for s in rest_t)
        left_o.extend((key, s) for s in rest_o)
    matched = sum(abs(st - so) <= score_tol for _, st, so in pairs)
    return pairs, matched, left_t, left_o


def _as_prediction(image_id, key, box_tol, **scores):
    box = [round(v * box_tol, 6) for v in key[1:]]
    return dict(image_id=image_id, category_id=key[0], bbox=box, **scores)


def compare_predictions(theirs, ours, score_tol=1e-3, box_tol=1e-3, min_matched=0.99):
    """
    Compare two prediction lists image by image.

    Args:
        theirs, ours (list[dict]): COCO-style predictions.
        score_tol (float): largest score difference of a matched pair.
        box_tol (float): boxes closer than this per coordinate are the same box.
        min_matched (float): the matched fraction needed to pass.
    Returns:
        dict: ``num_theirs``, ``num_ours``, ``num_images``, ``paired``, ``matched``,
        ``matched_fraction`` (matched / the larger of the two counts; 1.0 when both are empty),
        ``max_score_diff`` (over the pairs), ``count_mismatch`` (``[{"image_id", "theirs",
        "ours"}]``), ``unpaired_theirs`` / ``unpaired_ours`` (counts), ``worst_pairs`` (up to 10
        ``{"image_id", "category_id", "bbox", "theirs", "ours"}`` with the largest score
        differences), ``unpaired_examples`` (``{"theirs": [...], "ours": [...]}``, up to 10 each
        ``{"image_id", "category_id", "bbox", "score"}``), ``passed`` (matched fraction >=
        ``min_matched`` and no count mismatch).
    """
    by_t, by_o = _by_image(theirs), _by_image(ours)
    image_ids = sorted(by_t.keys() | by_o.keys())
    count_mismatch, all_pairs, left_t, left_o = [], [], [], []
    matched = 0
    for image_id in image_ids:
        t, o = by_t.get(image_id, []), by_o.get(image_id, [])
        if len(t) != len(o):
            count_mismatch.append({"image_id": image_id, "theirs": len(t), "ours": len(o)})
        pairs, m, ut, uo = _compare_image(t, o, score_tol, box_tol)
        matched += m
        all_pairs.extend((image_id,) + p for p in pairs)
        left_t.extend(_as_prediction(image_id, k, box_tol, score=s) for k, s in ut)
        left_o.extend(_as_prediction(image_id, k, box_tol, score=s) for k, s in uo)
    total = max(len(theirs), len(ours))
    fraction = matched / total if total else 1.0
    diffs = sorted(all_pairs, key=lambda p: -abs(p[2] - p[3]))
    worst = [_as_prediction(i, k, box_tol, theirs=st, ours=so) for i, k, st, so in diffs[:10]]
    return {
        "num_theirs": len(theirs), "num_ours": len(ours), "num_images": len(image_ids),
        "paired": len(all_pairs), "matched": matched, "matched_fraction": fraction,
        "max_score_diff": abs(diffs[0][2] - diffs[0][3]) if diffs else 0.0,
        "count_mismatch": count_mismatch, "unpaired_theirs": len(left_t),
        "unpaired_ours": len(left_o), "worst_pairs": worst,
        "unpaired_examples": {"theirs": left_t[:10], "ours": left_o[:10]},
        "passed": fraction >= min_matched and not count_mismatch,
    }


def summary_line(result, score_tol=1e-3):
    """One line describing a :func:`compare_predictions` result, e.g. for documentation."""
    return (
        "{matched}/{total} predictions matched ({pct:.2f}%: same class, same box, score within "
        "{tol:g}) on {images} images; max |score diff| {maxdiff:.2e}; images with a count "
        "mismatch: {mism}; {verdict}".format(
            matched=result["matched"], total=max(result["num_theirs"], result["num_ours"]),
            pct=100.0 * result["matched_fraction"], tol=score_tol, images=result["num_images"],
            maxdiff=result["max_score_diff"], mism=len(result["count_mismatch"]),
            verdict="PASS" if result["passed"] else "FAIL",
        )
    )
