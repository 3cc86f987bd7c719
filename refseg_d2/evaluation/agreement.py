"""How closely two runs' predictions on the same images agree (e.g. fp32 against bf16)."""

MASK_IOU, SCORE_TOL = 0.98, 1e-3


def match_share(reference, other, mask_iou=MASK_IOU, score_tol=SCORE_TOL):
    """
    Share of predictions matched one for one (same class, mask IoU >= ``mask_iou``, score
    within ``score_tol``), greedily in the reference's order; unmatched predictions on either
    side count.

    Args:
        reference, other (list[Instances]): per image, with pred_classes, scores, pred_masks.
    Returns:
        float in [0, 1]; 1.0 when neither side predicts anything.
    """
    matched = total = 0
    for ref, got in zip(reference, other):
        used = set()
        for i in range(len(ref)):
            for j in range(len(got)):
                if j in used or int(got.pred_classes[j]) != int(ref.pred_classes[i]):
                    continue
                if abs(float(got.scores[j]) - float(ref.scores[i])) > score_tol:
                    continue
                a, b = ref.pred_masks[i], got.pred_masks[j]
                union = int((a | b).sum())
                iou = int((a & b).sum()) / union if union else 1.0
                if iou >= mask_iou:
                    used.add(j)
                    matched += 1
                    break
        total += max(len(ref), len(got))
    return matched / total if total else 1.0
