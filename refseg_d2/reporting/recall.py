"""
Per-image recall at an IoU threshold, to pick the gallery images of a run report.

Recall of one image = matched ground-truth instances / non-crowd ground-truth instances, where
predictions (those with score >= a threshold) are taken in decreasing score order and each
matches the unmatched ground truth of its class with the highest IoU >= the threshold (one
ground truth per prediction, as COCOeval matches). The IoU is the mask IoU (pycocotools) when
both the prediction and the ground truth have a segmentation, the box IoU otherwise.
"""
import numpy as np
import pycocotools.mask as mask_util
from detectron2.structures import BoxMode

from ..utils.masks import decode_segmentation, encode_mask


def ground_truth_records(dataset_dict, contiguous_to_id=None):
    """
    The annotations of a Detectron2 dataset dict as COCO-style records.

    Args:
        dataset_dict (dict): with "height", "width" and "annotations" (contiguous
            "category_id", "bbox" + "bbox_mode", optional "segmentation", "iscrowd").
        contiguous_to_id (dict or None): contiguous class index -> dataset category id
            (None: keep the contiguous ids).
    Returns:
        list of {"category_id", "bbox" (XYWH), "segmentation" (RLE or None), "iscrowd"}.
    """
    h, w = dataset_dict["height"], dataset_dict["width"]
    records = []
    for ann in dataset_dict.get("annotations", []):
        box = BoxMode.convert(list(ann["bbox"]), ann.get("bbox_mode", BoxMode.XYWH_ABS),
                              BoxMode.XYWH_ABS)
        mask = decode_segmentation(ann.get("segmentation"), h, w)
        cat = ann["category_id"]
        records.append({
            "category_id": contiguous_to_id[cat] if contiguous_to_id is not None else cat,
            "bbox": [float(v) for v in box],
            "segmentation": encode_mask(mask) if mask is not None else None,
            "iscrowd": int(ann.get("iscrowd", 0)),
        })
    return records


def iou_matrix(predictions, ground_truth, height, width):
    """
    (P, G) IoU of every prediction with every ground truth: mask IoU where both have a
    segmentation, box IoU otherwise.
    """
    if not predictions or not ground_truth:
        return np.zeros((len(predictions), len(ground_truth)))
    zeros = [0] * len(ground_truth)
    ious = np.asarray(mask_util.iou([p["bbox"] for p in predictions],
                                    [g["bbox"] for g in ground_truth], zeros), dtype=np.float64)
    pred_has = [p.get("segmentation") is not None for p in predictions]
    gt_has = [g.get("segmentation") is not None for g in ground_truth]
    if any(pred_has) and any(gt_has):
        pi = [i for i, has in enumerate(pred_has) if has]
        gi = [j for j, has in enumerate(gt_has) if has]
        pr = [_as_bytes(predictions[i]["segmentation"], height, width) for i in pi]
        gr = [_as_bytes(ground_truth[j]["segmentation"], height, width) for j in gi]
        masks = np.asarray(mask_util.iou(pr, gr, [0] * len(gr)), dtype=np.float64)
        ious[np.ix_(pi, gi)] = masks.reshape(len(pi), len(gi))
    return ious


def _as_bytes(segm, height, width):
    if isinstance(segm, dict) and not isinstance(segm.get("counts"), list):
        counts = segm["counts"]
        return {"size": list(segm["size"]),
                "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
    rle = encode_mask(decode_segmentation(segm, height, width))
    return {"size": rle["size"], "counts": rle["counts"].encode("ascii")}


def image_recall(predictions, ground_truth, height, width, iou_thresh=0.5, score_thresh=0.0):
    """
    Recall of one image (see the module docstring).

    Args:
        predictions (list[dict]): COCO results of the image ("category_id", "score", "bbox"
            XYWH, optional "segmentation").
        ground_truth (list[dict]): records of :func:`ground_truth_records` (same id space).
    Returns:
        dict {"recall": float or None (no non-crowd ground truth), "matched": int,
        "total": int, "matches": [(prediction index, ground-truth index)]}
    """
    gt = [(j, g) for j, g in enumerate(ground_truth) if not g.get("iscrowd", 0)]
    kept = [(i, p) for i, p in enumerate(predictions) if p["score"] >= score_thresh]
    kept.sort(key=lambda ip: -ip[1]["score"])
    ious = iou_matrix([p for _, p in kept], [g for _, g in gt], height, width)
    taken = np.zeros(len(gt), dtype=bool)
    matches = []
    for row, (i, p) in enumerate(kept):
        best, best_iou = -1, iou_thresh
        for col, (_, g) in enumerate(gt):
            if taken[col] or g["category_id"] != p["category_id"]:
                continue
            if ious[row, col] >= best_iou:
                best, best_iou = col, ious[row, col]
        if best >= 0:
            taken[best] = True
            matches.append((i, gt[best][0]))
    total = len(gt)
    return {"recall": float(taken.sum()) / total if total else None,
            "matched": int(taken.sum()), "total": total, "matches": matches}


def best_and_worst(recalls, count):
    """
    The gallery picks: indices of the ``count`` images with the highest recall and of the
    ``count`` with the lowest (images with recall None left out, ties in input order, no image
    in both; with fewer than 2 x count images the best get the larger half).

    Args:
        recalls (list[float or None]).
    Returns:
        (best, worst): lists of indices, best first / worst first.
    """
    ranked = sorted((i for i, r in enumerate(recalls) if r is not None),
                    key=lambda i: (-recalls[i], i))
    n_best = min(count, (len(ranked) + 1) // 2)
    n_worst = min(count, len(ranked) - n_best)
    best = ranked[:n_best]
    worst = sorted(ranked[n_best:], key=lambda i: (recalls[i], i))[:n_worst]
    return best, worst
