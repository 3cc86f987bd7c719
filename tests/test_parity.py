"""compare_predictions: pairing by image, class and box, nearest score; counts; pass / fail."""
import copy

from refseg_d2.evaluation.parity import compare_predictions, summary_line


def _pred(image_id, category_id, bbox, score, **extra):
    return dict(image_id=image_id, category_id=category_id, bbox=bbox, score=score, **extra)


THEIRS = [
    _pred(1, 3, [0, 0, 10, 12], 0.91),
    _pred(1, 7, [5, 6, 20, 20], 0.42),
    _pred(1, 7, [5, 6, 20, 20], 0.40),      # an exact duplicate proposal box, other score
    _pred(2, 12, [30, 1, 4, 4], -0.05),
    _pred(2, 3, [0, 0, 50, 40], 0.0),
]


def test_identical_lists_match_fully_and_pass():
    result = compare_predictions(THEIRS, copy.deepcopy(THEIRS))
    assert result["matched"] == 5 and result["matched_fraction"] == 1.0
    assert result["max_score_diff"] == 0.0 and result["count_mismatch"] == []
    assert result["passed"]


def test_float_boxes_and_extra_keys_of_ours_pair_with_integer_boxes():
    ours = [dict(p, bbox=[float(v) for v in p["bbox"]], segmentation={"counts": "x"})
            for p in THEIRS]
    assert compare_predictions(THEIRS, ours)["matched"] == 5


def test_duplicate_boxes_pair_by_nearest_score_in_any_order():
    ours = copy.deepcopy(THEIRS)
    ours[1]["score"], ours[2]["score"] = 0.4004, 0.4196
    result = compare_predictions(THEIRS, ours)
    assert result["matched"] == 5
    assert abs(result["max_score_diff"] - 4e-4) < 1e-9


def test_score_beyond_tolerance_is_paired_but_not_matched():
    ours = copy.deepcopy(THEIRS)
    ours[0]["score"] = 0.91 + 2e-3
    result = compare_predictions(THEIRS, ours, score_tol=1e-3, min_matched=0.0)
    assert result["paired"] == 5 and result["matched"] == 4
    assert abs(result["max_score_diff"] - 2e-3) < 1e-9
    assert result["worst_pairs"][0]["image_id"] == 1
    assert result["worst_pairs"][0]["category_id"] == 3


def test_other_class_or_box_is_unpaired_and_fails_below_99_percent():
    ours = copy.deepcopy(THEIRS)
    ours[3]["category_id"] = 7
    ours[4]["bbox"] = [0, 0, 50, 41]
    result = compare_predictions(THEIRS, ours)
    assert result["paired"] == 3 and result["unpaired_theirs"] == 2
    assert result["unpaired_ours"] == 2
    assert result["unpaired_examples"]["theirs"][0] == _pred(2, 3, [0, 0, 50, 40], 0.0)
    assert _pred(2, 7, [30, 1, 4, 4], -0.05) in result["unpaired_examples"]["ours"]
    assert result["count_mismatch"] == [] and not result["passed"]


def test_count_mismatch_is_reported_per_image_and_fails_even_when_fraction_passes():
    theirs = THEIRS + [_pred(3, 3, [1, 1, 2, 2], 0.1 + 0.001 * k) for k in range(200)]
    ours = theirs[:-1] + [_pred(4, 3, [1, 1, 2, 2], 0.5)]
    result = compare_predictions(theirs, ours)
    assert result["matched_fraction"] >= 0.99
    assert result["count_mismatch"] == [{"image_id": 3, "theirs": 200, "ours": 199},
                                        {"image_id": 4, "theirs": 0, "ours": 1}]
    assert not result["passed"]


def test_empty_lists_pass_and_the_summary_line_gives_counts_and_verdict():
    assert compare_predictions([], [])["passed"]
    line = summary_line(compare_predictions(THEIRS, THEIRS))
    assert line.startswith("5/5 predictions matched (100.00%") and line.endswith("PASS")
