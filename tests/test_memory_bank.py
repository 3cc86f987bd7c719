"""MemoryBank as a first-class object: built from records, extended, cached prototypes, saved."""
import pytest
import torch

from refseg_d2 import MemoryBank, load_memory, save_memory
from refseg_d2.modeling.memory import ReferenceRecord

SIGNATURE = {"name": "toy", "input_size": 14, "dim": 2}


def _record(label, feature, valid=True, index=0, ann=0):
    return ReferenceRecord(
        file_name="img{}.png".format(index), dataset_index=index, annotation_index=ann,
        label=label, feature=torch.tensor(feature, dtype=torch.float32), valid=valid,
        mask_from_sam2=False, crop_window=(0, 0, 4, 4), image_size=(8, 8),
    )


def _bank(ids, names, per_class, provenance=None):
    return MemoryBank(2, SIGNATURE).set(ids, names, [torch.tensor(f) for f in per_class], provenance)


def test_records_fill_classes_in_record_order_and_skip_references_without_patches():
    records = [_record(1, [1.0, 0.0]), _record(0, [0.0, 2.0], index=1),
               _record(1, [3.0, 0.0], valid=False, index=2), _record(1, [0.0, 4.0], index=3)]
    bank = MemoryBank.from_records(records, [5, 9], ["a", "b"], MemoryBank(2, SIGNATURE),
                                   with_provenance=True)
    assert bank.counts.tolist() == [1, 2]
    assert bank.instance_features[1, :2].tolist() == [[1.0, 0.0], [0.0, 4.0]]
    assert [[p["file_name"] for p in c] for c in bank.provenance] == [
        ["img1.png"], ["img0.png", "img3.png"]]
    # prototype of "b": normalise(mean((1, 0), (0, 4))) = (0.5, 2) / sqrt(4.25)
    expected = torch.tensor([0.5, 2.0]) / 4.25 ** 0.5
    assert torch.allclose(bank.prototypes()[1], expected)


def test_a_reference_covering_no_patch_is_skipped_with_a_warning_naming_it(caplog):
    import logging

    named = _record(1, [3.0, 0.0], valid=False, index=1)
    named.name = "masks[1] (class 'b')"
    records = [_record(0, [1.0, 0.0]), named, _record(1, [0.0, 1.0], index=2, ann=3),
               _record(1, [0.0, 1.0], valid=False, index=4, ann=2)]
    with caplog.at_level(logging.WARNING, logger="refseg_d2"):
        MemoryBank.from_records(records, [1, 2], ["a", "b"], MemoryBank(2, SIGNATURE))
    assert "Reference masks[1] (class 'b') covers no encoder patch sample" in caplog.text
    assert "Reference annotation 2 of img4.png (class b) covers no" in caplog.text
    assert "None" not in caplog.text


def test_a_class_left_without_usable_references_is_an_error_naming_it():
    with pytest.raises(ValueError, match=r"\['a'\]"):
        MemoryBank.from_records([_record(0, [1.0, 0.0], valid=False), _record(1, [1.0, 0.0])],
                                [1, 2], ["a", "b"], MemoryBank(2, SIGNATURE))


def test_extend_appends_shots_by_name_and_gives_new_classes_ids_after_the_largest():
    base = _bank([3, 7], ["cat", "dog"], [[[1.0, 0.0]], [[0.0, 1.0], [0.0, 2.0]]],
                 [[{"s": 1}], [{"s": 2}, {"s": 3}]])
    added = _bank([1, 2], ["dog", "eel"], [[[5.0, 5.0]], [[6.0, 0.0]]], [[{"s": 4}], [{"s": 5}]])
    base.extend(added)
    assert base.class_ids.tolist() == [3, 7, 8]
    assert base.class_names == ["cat", "dog", "eel"]
    assert base.counts.tolist() == [1, 3, 1]
    assert base.instance_features[1, :3].tolist() == [[0.0, 1.0], [0.0, 2.0], [5.0, 5.0]]
    assert base.provenance[1] == [{"s": 2}, {"s": 3}, {"s": 4}]


def test_extending_an_empty_bank_keeps_the_classes_and_ids_of_the_other():
    empty = MemoryBank(2, SIGNATURE)
    empty.extend(_bank([4, 10], ["x", "y"], [[[1.0, 1.0]], [[2.0, 0.0]]]))
    assert empty.class_ids.tolist() == [4, 10] and empty.class_names == ["x", "y"]
    assert empty.provenance == [None, None]


def test_cached_prototypes_follow_any_change_of_the_buffers():
    bank = _bank([1], ["a"], [[[1.0, 0.0]]])
    assert bank.prototypes().tolist() == [[1.0, 0.0]]
    bank.instance_features[0, 0] = torch.tensor([0.0, 3.0])     # in place, as load_state_dict does
    assert bank.prototypes().tolist() == [[0.0, 1.0]]


def test_a_saved_bank_loads_alone_and_refuses_another_encoder(tmp_path):
    bank = _bank([2, 5], ["a", "b"], [[[1.0, 2.0]], [[3.0, 4.0], [5.0, 6.0]]],
                 [[{"s": 1}], [{"s": 2}, {"s": 3}]])
    path = save_memory(bank, str(tmp_path / "bank.pth"))
    loaded = load_memory(path)
    assert torch.equal(loaded.instance_features, bank.instance_features)
    assert loaded.class_names == ["a", "b"] and loaded.provenance == bank.provenance
    assert loaded.encoder_signature == SIGNATURE and loaded.feature_dim == 2
    other = MemoryBank(2, dict(SIGNATURE, name="other"))
    with pytest.raises(ValueError, match="built with encoder"):
        load_memory(path, like=other)


@pytest.mark.parametrize("damage", ["empty", "half", "json"])
def test_a_truncated_or_foreign_memory_file_is_named_with_its_size(tmp_path, damage):
    path = save_memory(_bank([1], ["a"], [[[1.0, 2.0]]]), str(tmp_path / "bank.pth"))
    data = open(path, "rb").read()
    content = {"empty": b"", "half": data[: len(data) // 2], "json": b'{"memory": []}'}[damage]
    with open(path, "wb") as f:
        f.write(content)
    expected = r"Cannot read memory file {} \({} bytes\): it is truncated or not a memory file \(".format(
        path.replace(".", r"\."), len(content))
    with pytest.raises(ValueError, match=expected):
        load_memory(path)
