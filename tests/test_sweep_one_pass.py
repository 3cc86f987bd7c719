"""
The one-pass sweep (refseg_d2/engine/sweep.py, tools/sweep.py) and the multi-set memory builder
(refseg_d2/engine/memory_sets.py): every run gives exactly what its own train_net run gives,
shared reference annotations are encoded once, finished runs are not redone.
"""
import json
import os
import subprocess
import sys

import pytest
import torch
from common import REPO, TINY_CONFIG, register_edited, tiny_cfg
from detectron2.data import DatasetCatalog

sys.path.insert(0, os.path.join(REPO, "tools"))
import sweep  # noqa: E402
import train_net  # noqa: E402

RUNS = ("1shot_seed0", "1shot_seed1", "swp_boxes")


def _fewer_and_copied(data):
    """The second annotation of every image dropped, the first one repeated (CD-FSOD style)."""
    kept, seen = [], {}
    for ann in data["annotations"]:
        seen[ann["image_id"]] = seen.get(ann["image_id"], -1) + 1
        if seen[ann["image_id"]] != 1:
            kept.append(ann)
    kept.append(dict(kept[0], id=990000))
    assert {a["category_id"] for a in kept} == {a["category_id"] for a in data["annotations"]}
    data["annotations"] = kept


def _three_targets(data):
    """Two targets with objects and the one without (proposals are the slow part)."""
    keep = {image["id"] for image in data["images"][:2] + data["images"][-1:]}
    data["images"] = [image for image in data["images"] if image["id"] in keep]
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] in keep]


def _drop_last(image_id):
    def edit(data):
        last = [a for a in data["annotations"] if a["image_id"] == image_id][-1]
        data["annotations"].remove(last)

    return edit


@pytest.fixture(scope="module")
def sets(synthetic, tmp_path_factory):
    """(json, image_root) of the sweep's reference sets and its test set."""
    tmp = tmp_path_factory.mktemp("sets")
    seed1 = register_edited("swp_edit_seed1", synthetic["refs"], tmp, _fewer_and_copied)
    boxes_subset = register_edited("swp_boxes_subset", synthetic["refs_boxes"], tmp, _drop_last(53))
    targets = register_edited("swp_edit_targets", synthetic["targets"], tmp, _three_targets)
    return {
        "swp_1shot_seed0": synthetic["refs"],
        "swp_1shot_seed1": (os.path.join(str(tmp), seed1 + ".json"), synthetic["refs"][1]),
        "swp_boxes": synthetic["refs_boxes"],
        "swp_boxes_subset": (os.path.join(str(tmp), boxes_subset + ".json"),
                             synthetic["refs_boxes"][1]),
        "swp_targets": (os.path.join(str(tmp), targets + ".json"), synthetic["targets"][1]),
    }


def _common(random_weights, sets):
    sam2, dinov2 = random_weights
    register = []
    for name in ("swp_1shot_seed0", "swp_1shot_seed1", "swp_boxes", "swp_targets"):
        register += ["--register", name, *sets[name]]
    opts = ["DATASETS.TEST", "('swp_targets',)", "MODEL.REFSEG.SAM2.WEIGHTS", sam2,
            "MODEL.REFSEG.ENCODER.WEIGHTS", dinov2]
    return register, opts


def _sweep_argv(random_weights, sets, out, *extra, references=("swp_boxes",)):
    register, opts = _common(random_weights, sets)
    explicit = ["--references", *references] if references else []
    return ["--config-file", TINY_CONFIG, "--shots", "1", "--seeds", "0", "1", *explicit,
            "--output-dir", str(out), *register, *extra, "--",
            "DATASETS.REFERENCE", "('swp_1shot_seed0',)", *opts]


def _read(path, binary=False):
    with open(path, "rb" if binary else "r") as f:
        return f.read()


def _outputs(run_dir):
    """metrics.json, the COCO results and the memory features of a run folder."""
    from refseg_d2 import load_memory

    memory = load_memory(os.path.join(str(run_dir), "refseg_memory.pth"))
    return {
        "metrics": _read(os.path.join(str(run_dir), "metrics.json")),
        "results": _read(os.path.join(str(run_dir), "inference", "swp_targets",
                                      "coco_instances_results.json")),
        "memory": (memory.instance_features, memory.counts, memory.class_ids),
    }


def _assert_same(a, b, what):
    assert a["metrics"] == b["metrics"], what
    assert a["results"] == b["results"], what
    for x, y in zip(a["memory"], b["memory"]):
        assert torch.equal(x, y), what


@pytest.fixture(scope="module")
def swept(random_weights, sets, tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep")
    return out, sweep.main(_sweep_argv(random_weights, sets, out))


def test_every_run_of_a_sweep_equals_its_own_train_net_run_bit_for_bit(
        swept, random_weights, sets, tmp_path):
    out, (table, explicit) = swept
    assert list(table) == [1] and list(table[1]) == [0, 1] and list(explicit) == ["swp_boxes"]
    register, opts = _common(random_weights, sets)
    for run, refs in zip(RUNS, ("swp_1shot_seed0", "swp_1shot_seed1", "swp_boxes")):
        alone = tmp_path / run
        train_net.main(train_net.get_parser().parse_args(
            ["--config-file", TINY_CONFIG, "--eval-only", *register, "DATASETS.REFERENCE",
             "('{}',)".format(refs), "OUTPUT_DIR", str(alone), *opts]))
        swept_run = _outputs(out / run)
        _assert_same(swept_run, _outputs(alone), run)
        assert json.loads(swept_run["results"]), run                # something was predicted
        assert refs in _read(os.path.join(str(out / run), "config.yaml"))
        assert "Per-class AP" in _read(os.path.join(str(out / run), "report.html")), run
    for figure in ("results.png", "results.svg"):
        assert os.path.getsize(os.path.join(str(out), figure)) > 0
    md = _read(os.path.join(str(out), "results.md"))
    assert "## Reference sets" in md and "| swp_boxes | " in md
    assert "swp_boxes" not in _read(os.path.join(str(out), "results.csv"))


def test_a_rerun_matches_only_the_unfinished_runs(swept, random_weights, sets, monkeypatch):
    from refseg_d2 import RefSeg
    from refseg_d2.engine import memory_sets

    out, _ = swept
    before = {run: _outputs(out / run) for run in RUNS}
    os.remove(os.path.join(str(out / "1shot_seed1"), "metrics.json"))
    stamp = os.stat(os.path.join(str(out / "1shot_seed0"), "metrics.json")).st_mtime_ns
    matched, filled = [], []
    real_match, real_build = RefSeg.match, memory_sets.build_memories

    def match(self, proposals, memory, height, width):
        matched.append(memory.checksum())
        return real_match(self, proposals, memory, height, width)

    def build(cfg, model, reference_sets, with_provenance=False):
        filled.append(list(reference_sets))
        return real_build(cfg, model, reference_sets, with_provenance)

    monkeypatch.setattr(RefSeg, "match", match)
    monkeypatch.setattr("refseg_d2.engine.sweep.build_memories", build)
    sweep.main(_sweep_argv(random_weights, sets, out))
    assert filled == [["1shot_seed1"]]
    assert len(matched) == len(DatasetCatalog.get("swp_targets")) and len(set(matched)) == 1
    assert os.stat(os.path.join(str(out / "1shot_seed0"), "metrics.json")).st_mtime_ns == stamp
    for run in RUNS:
        _assert_same(_outputs(out / run), before[run], run)


_MODELS = {}


def _model(random_weights):
    from refseg_d2 import RefSegTrainer

    if "model" not in _MODELS:
        _MODELS["model"] = RefSegTrainer.build_model(tiny_cfg(random_weights))
    return _MODELS["model"]


def _count_crops(model, monkeypatch):
    encoder, rows = model.reference_encoder, []
    real = encoder._encode_crops

    def counting(image, masks, windows, which):
        rows.append(len(which))
        return real(image, masks, windows, which)

    monkeypatch.setattr(encoder, "_encode_crops", counting)
    return rows


@pytest.mark.parametrize("union", [True, False])
def test_multi_set_memories_equal_build_memory_and_encode_shared_annotations_once(
        random_weights, sets, monkeypatch, union):
    from common import register

    from refseg_d2 import build_memory
    from refseg_d2.engine import build_memories, memory_sets

    names = ["swp_1shot_seed0", "swp_1shot_seed1", "swp_boxes", "swp_boxes_subset"]
    for name in names:
        register(name, sets[name])
    cfg, model = tiny_cfg(random_weights), _model(random_weights)
    monkeypatch.setattr(memory_sets, "crops_encode_independently", lambda c, m: union)
    rows = _count_crops(model, monkeypatch)
    alone = {}
    for name in names:
        rows.clear()
        alone[name] = build_memory(cfg, model, [name])[0], sum(rows)
    rows.clear()
    together = build_memories(cfg, model, {"set_" + n: [n] for n in names})
    for name in names:
        memory, stats = together["set_" + name]
        assert memory.checksum() == alone[name][0].checksum() == stats["checksum"], name
        assert torch.equal(memory.instance_features, alone[name][0].instance_features), name
        assert memory.class_names == alone[name][0].class_names
        assert stats["references"] == int(memory.counts.sum())
    # seed1's annotations are all in seed0's (union: no crop more); the box subset differs from
    # swp_boxes in image 53 only (that image again); without union seed1's images differ too
    # (image 4's list is the same in both, the others differ); image 53 has box-only references
    # (SAM 2 masks: never merged) and 3 annotations in swp_boxes, 2 in the subset
    seed1 = 0 if union else alone["swp_1shot_seed1"][1] - 1
    assert sum(rows) == alone["swp_1shot_seed0"][1] + seed1 + alone["swp_boxes"][1] + 2
    assert sum(rows) < sum(n for _, n in alone.values())


def test_a_bad_set_is_an_error_naming_it_before_anything_is_encoded(
        random_weights, synthetic, tmp_path, monkeypatch):
    from refseg_d2.engine import build_memories

    def no_discs(data):
        data["annotations"] = [a for a in data["annotations"] if a["category_id"] != 7]

    from common import register

    register("swp_1shot_seed0", synthetic["refs"])
    bad = register_edited("swp_no_discs", synthetic["refs"], tmp_path, no_discs)
    cfg, model = tiny_cfg(random_weights), _model(random_weights)
    rows = _count_crops(model, monkeypatch)
    with pytest.raises(ValueError, match="Reference set '5shot_seed3' \\(swp_no_discs\\)"):
        build_memories(cfg, model, {"1shot": ["swp_1shot_seed0"], "5shot_seed3": [bad]})
    with pytest.raises(ValueError, match="Reference set 'none' names no reference dataset"):
        build_memories(cfg, model, {"none": []})
    assert rows == []


def test_two_processes_give_the_sweep_of_one(swept, random_weights, sets, tmp_path):
    out, _ = swept
    argv = _sweep_argv(random_weights, sets, tmp_path, "--num-gpus", "2", "--dist-url", "auto",
                       references=())
    proc = subprocess.run([sys.executable, os.path.join(REPO, "tools", "sweep.py")] + argv,
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-5000:]
    for run in RUNS[:2]:
        _assert_same(_outputs(tmp_path / run), _outputs(out / run), run)
    log = _read(os.path.join(str(tmp_path), "log.txt"))
    assert "x one run" in log and "matching" in log


def test_a_sweep_loads_and_checks_each_test_dataset_once_and_counts_each_image_once(
        random_weights, sets, tmp_path, monkeypatch):
    from common import count_loads_and_checks, register

    from refseg_d2.engine import sweep as engine_sweep

    targets = register("swp_once_targets", sets["swp_targets"])
    refs = register("swp_once_refs", sets["swp_1shot_seed0"])
    loads, checks, load = count_loads_and_checks(targets, monkeypatch)
    cfg = tiny_cfg(random_weights, str(tmp_path), ["DATASETS.TEST", (targets,),
                                                   "MODEL.REFSEG.MEMORY.SAVE_NAME", ""])
    model = _model(random_weights)
    runs = [engine_sweep.SweepRun(name, (refs,), str(tmp_path / name)) for name in ("a", "b")]
    _, timings = engine_sweep.run_sweep(cfg, model, runs, runs_per_pass=1)
    assert timings["passes"] == 2
    assert len(loads) == 1 and len(checks) == 1
    images = len(load())
    assert timings["images"] == 2 * images and model.timer.num_images == 2 * images
