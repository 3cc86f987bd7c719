"""The authors' reference sampler: validity rules and a hand-worked example."""
import random

import pytest

from refseg_d2.data.datasets.sampling import is_valid_annotation, picks_to_coco, sample_references

IMAGE = {"width": 100, "height": 100}


@pytest.mark.parametrize("bbox, crowd, valid", [
    ([10, 10, 32, 32], 0, True),     # smallest valid box, 10 px from the left/top border
    ([58, 58, 32, 32], 0, True),     # exactly 10 px from the right/bottom border
    ([10, 10, 31.9, 40], 0, False),  # too narrow
    ([10, 10, 40, 31], 0, False),    # too short
    ([9.9, 20, 40, 40], 0, False),   # too close to the left border
    ([20, 9, 40, 40], 0, False),     # top
    ([50, 20, 40.5, 40], 0, False),  # right
    ([20, 51, 40, 40], 0, False),    # bottom
    ([20, 20, 40, 40], 1, False),    # crowd
])
def test_validity_rules(bbox, crowd, valid):
    assert is_valid_annotation({"bbox": bbox, "iscrowd": crowd}, IMAGE) is valid


def _ann(ann_id, image_id, cat, bbox=(20, 20, 40, 40), **extra):
    return dict({"id": ann_id, "image_id": image_id, "category_id": cat, "bbox": list(bbox),
                 "iscrowd": 0}, **extra)


def hand_example():
    """Categories a (1) and b (2) are sampled, c (3) is not. b appears first in the file."""
    return {
        "images": [dict(IMAGE, id=i, file_name="{}.jpg".format(i)) for i in range(1, 6)],
        "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}, {"id": 3, "name": "c"}],
        "annotations": [
            _ann(10, 1, 2),
            _ann(11, 1, 1),
            _ann(12, 2, 1),
            _ann(13, 2, 1),                       # a second "a" in image 2
            _ann(14, 3, 1, iscrowd=1),            # invalid: crowd
            _ann(15, 3, 3),                       # not sampled category
            _ann(16, 4, 2, bbox=(20, 20, 20, 40)),  # invalid: too small
            _ann(17, 4, 1, bbox=(2, 20, 40, 40)),   # invalid: at the border
            _ann(18, 3, 2),
            _ann(19, 2, 2),
            _ann(20, 5, 1),
            _ann(21, 5, 1, isimpossible=1),       # removed (remove_bad)
        ],
    }


def test_sampler_reproduces_the_hand_worked_example():
    # Per category, (image, annotation) in file order, b (seen first) then a:
    #   b: (1, 10), (4, 16), (3, 18), (2, 19); a: (1, 11), (2, 12), (2, 13), (3, 14), (4, 17),
    #   (5, 20) (21 is removed). random.seed(5) then one shuffle each gives annotations
    #   b: 10, 16, 19, 18 and a: 13, 14, 12, 11, 17, 20. Walking them, 3 shots:
    #   b: 10 (img 1), 16 invalid, 19 (img 2), 18 (img 3)
    #   a: 13 (img 2), 14 crowd, 12 same image as 13, 11 (img 1), 17 border, 20 (img 5)
    picks = sample_references(hand_example(), [1, 2], shots=3, seed=5)
    assert list(picks) == [2, 1]
    assert picks[2] == [(1, 10), (2, 19), (3, 18)]
    assert picks[1] == [(2, 13), (1, 11), (5, 20)]
    # Seed 42: b shuffled to 18, 16, 19, 10 and a to 14, 11, 13, 17, 20, 12.
    picks = sample_references(hand_example(), [1, 2], shots=3, seed=42)
    assert picks[2] == [(3, 18), (2, 19), (1, 10)]
    assert picks[1] == [(1, 11), (2, 13), (5, 20)]


def test_sampler_is_deterministic_and_leaves_the_global_rng_alone():
    random.seed(123)
    before = random.random()
    random.seed(123)
    first = sample_references(hand_example(), [1, 2], shots=2, seed=7)
    assert random.random() == before
    assert sample_references(hand_example(), [1, 2], shots=2, seed=7) == first


def test_too_few_references_is_an_error_naming_the_category():
    with pytest.raises(ValueError, match="category 2 has only 3 valid"):
        sample_references(hand_example(), [1, 2], shots=4, seed=5, source="x.json")
    with pytest.raises(ValueError, match=r"no annotation of categories \[4\]"):
        sample_references(hand_example(), [1, 4], shots=1, seed=5)


def test_sampled_set_as_coco_keeps_only_the_picked_annotations():
    data = hand_example()
    picks = sample_references(data, [1, 2], shots=3, seed=5)
    out = picks_to_coco(data, picks, [1, 2])
    assert [c["id"] for c in out["categories"]] == [1, 2]
    assert sorted(a["id"] for a in out["annotations"]) == [10, 11, 13, 18, 19, 20]
    assert [img["id"] for img in out["images"]] == [1, 2, 3, 5]  # image 1 once, for a and b
    assert out["refseg_sampling"]["1"] == [[2, 13], [1, 11], [5, 20]]
