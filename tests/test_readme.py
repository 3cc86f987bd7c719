"""
The documentation's code runs as written: every Python block and every command is extracted from
README.md and each docs/*.md and run in a workspace laid out as they assume (refs.json, photos/,
...), with ``configs/refseg_sam2l_dinov2l.yaml`` there being the tiny CPU model on random weights.
Each page runs on its own (its blocks in order, one Python namespace per page).

Commands that need the benchmark data or install and download things cannot run here as they
are; they are checked as far as that goes (their options parse with the tool's own parser, their
config merges, and every dataset they name is registered or resolves). The Makefile targets are
what CI itself runs. The README links every page of docs/, and docs/CONFIG.md names every key
that ``add_refseg_config`` defines under MODEL.REFSEG.
"""
import glob
import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys

import numpy as np
import pytest
from common import REPO, TINY_CONFIG
from PIL import Image

from refseg_d2.testing.synthetic import make_split

README = os.path.join(REPO, "README.md")
# The pages whose code is run: README.md, then docs/*.md (paths relative to the repository).
PAGES = ["README.md"] + sorted(os.path.relpath(p, REPO)
                               for p in glob.glob(os.path.join(REPO, "docs", "*.md")))
# Commands run as dry checks: (prefix of the command, why it cannot run here).
DRY = {
    "tools/sweep.py --config-file configs/benchmarks/": "a benchmark sweep (60 runs on COCO)",
    "tools/add_sam2_masks.py": "needs the VOC / CD-FSOD data",
    "tools/train_net.py --config-file configs/benchmarks/": "needs the COCO data",
    "tools/train_net.py --config-file configs/fsod_vfm/": "needs the benchmark data or the "
                                                          "official weights, and a boxes file",
    "tools/fsod_vfm_parity.py": "needs FSOD-VFM's repository",
    "tools/ntt_side_by_side.py": "needs the authors' NTT repository",
    "tools/gpu_check.py --output output/precision_cpu": "the CPU precision table (~10 min)",
    "tools/precision_steps.py": "SAM 2 at 1024 px, six decodings per target (~1 min)",
}
NOT_RUN = {"make": "CI runs the Makefile targets", "tools/download_checkpoints.sh": "downloads",
           "pip": "installs packages",
           "export": "sets the variable for the commands after it"}
# What running a page's blocks leaves in the workspace, per page (paths under the workspace).
PYTHON_OUTPUTS = {
    "docs/GETTING_STARTED.md": ["output/my_loop/refseg_memory.pth", "output/my_refs.pth",
                                "output/pets.pth"],
}
COMMAND_OUTPUTS = {
    "README.md": ["output/my_run/metrics.json"],
    "docs/GETTING_STARTED.md": ["output/my_run/metrics.json", "output/my_run/vis",
                                "output/my_demo/refseg_memory.pth"],
    "docs/BENCHMARKS.md": ["output/my_sweep/refs/metrics.json",
                           "output/my_sweep/refs_b/metrics.json"],
}


def readme_blocks(language, page="README.md"):
    """[(line number, text)] of the fenced blocks in ``language`` of ``page`` (README.md or a
    docs/*.md path, relative to the repository)."""
    blocks, current, start = [], None, 0
    with open(os.path.join(REPO, page)) as f:
        for number, line in enumerate(f, start=1):
            if line.startswith("```"):
                if current is None:
                    current, start, lang = [], number, line[3:].strip()
                else:
                    if lang == language:
                        blocks.append((start, "".join(current)))
                    current = None
            elif current is not None:
                current.append(line)
    return blocks


def commands(text):
    """The commands of a bash block, as argv lists (continuations joined, comments dropped)."""
    joined = text.replace("\\\n", " ")
    return [shlex.split(line, comments=True) for line in joined.splitlines()
            if shlex.split(line, comments=True)]


def _argv(command):
    """The tool path and its arguments of ``python tools/x.py ...``."""
    return (command[1], command[2:]) if command[0] == "python" else (command[0], command[1:])


def _kind(command):
    text = " ".join(command[1:] if command[0] == "python" else command)
    for prefix in NOT_RUN:
        if text.startswith(prefix):
            return "not run"
    for prefix in DRY:
        if text.startswith(prefix):
            return "dry"
    return "run"


@pytest.fixture(scope="module")
def workspace(random_weights, tmp_path_factory):
    """A folder laid out as the README's examples assume."""
    ws = str(tmp_path_factory.mktemp("readme"))
    os.symlink(os.path.join(REPO, "tools"), os.path.join(ws, "tools"))
    os.makedirs(os.path.join(ws, "configs"))
    for name in ("benchmarks", "fsod_vfm", "Base-RefSeg.yaml"):
        os.symlink(os.path.join(REPO, "configs", name), os.path.join(ws, "configs", name))
    sam2, dinov2 = random_weights
    with open(os.path.join(ws, "configs", "refseg_sam2l_dinov2l.yaml"), "w") as f:
        f.write('_BASE_: "{}"\nMODEL:\n  REFSEG:\n    SAM2:\n      WEIGHTS: "{}"\n'
                '    ENCODER:\n      WEIGHTS: "{}"\n'.format(TINY_CONFIG, sam2, dinov2))
    for split, name, seed, first in (("refs", "ref_images", 0, 1), ("test", "test_images", 1, 101)):
        json_file, root = make_split(ws, name, 4, seed=seed, overlap_every=0, first_image_id=first)
        os.replace(json_file, os.path.join(ws, split + ".json"))
        shutil.copytree(root, os.path.join(ws, "imgs"), dirs_exist_ok=True)
    _second_reference_set(ws)
    _folder_references(ws)
    images = sorted(os.listdir(os.path.join(ws, "test_images")))
    for folder, files, ext in (("photos", images[:2], ".png"), ("more/sub", images[2:3], ".jpg"),
                               ("new_photos", images[3:], ".png")):
        os.makedirs(os.path.join(ws, folder))
        for f in files:
            Image.open(os.path.join(ws, "test_images", f)).convert("RGB").save(
                os.path.join(ws, folder, os.path.splitext(f)[0] + ext))
    return ws


def _second_reference_set(ws):
    """refs_b.json: refs.json without its first image (a second reference set for the sweep)."""
    with open(os.path.join(ws, "refs.json")) as f:
        data = json.load(f)
    first = data["images"][0]["id"]
    data["images"] = data["images"][1:]
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] != first]
    with open(os.path.join(ws, "refs_b.json"), "w") as f:
        json.dump(data, f)


def _folder_references(ws):
    """my_refs/<class>/<image>.png with <image>_mask.png: one disc-like blob per class."""
    rng = np.random.RandomState(0)
    for c, name in enumerate(("cat", "dog")):
        folder = os.path.join(ws, "my_refs", name)
        os.makedirs(folder)
        for k in range(2):
            image = rng.randint(0, 255, (60, 80, 3)).astype(np.uint8)
            mask = np.zeros((60, 80), dtype=bool)
            mask[10 + 5 * k : 40, 15 + 20 * c : 50 + 10 * c] = True
            image[mask] = (200, 40 + 150 * c, 40)
            Image.fromarray(image).save(os.path.join(folder, "{}.png".format(k)))
            Image.fromarray(mask.astype(np.uint8) * 255).save(
                os.path.join(folder, "{}_mask.png".format(k)))


def test_the_docs_have_the_blocks_this_test_runs():
    assert "docs/GETTING_STARTED.md" in PAGES and "docs/CONFIG.md" in PAGES
    python = [b for page in PAGES for b in readme_blocks("python", page)]
    bash = [b for page in PAGES for b in readme_blocks("bash", page)]
    assert len(python) >= 3 and len(bash) >= 8
    everything = [c for _, text in bash for c in commands(text)]
    kinds = [_kind(c) for c in everything]
    assert kinds.count("run") >= 6 and kinds.count("dry") >= 4
    ran = {_argv(c)[0] for c in everything if _kind(c) == "run"}
    assert {"tools/train_net.py", "tools/demo.py", "tools/inspect_memory.py",
            "tools/visualize_results.py", "tools/benchmark.py", "tools/sweep.py"} <= ran
    assert set(PYTHON_OUTPUTS) | set(COMMAND_OUTPUTS) <= set(PAGES)
    # The README itself holds the set-up commands and one real run.
    readme = [c for _, text in readme_blocks("bash") for c in commands(text)]
    assert ["make", "install"] in readme and ["make", "test"] in readme
    assert any(_kind(c) == "run" for c in readme)


def test_the_readme_links_every_page_of_docs():
    readme = open(README).read()
    for page in PAGES[1:]:
        assert "]({})".format(page) in readme, page


@pytest.mark.parametrize("page", PAGES)
def test_every_relative_link_of_the_docs_resolves(page):
    text = open(os.path.join(REPO, page)).read()
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        path = target.split("#")[0]
        if not path or re.match(r"^[a-z]+:", path):
            continue
        resolved = os.path.normpath(os.path.join(REPO, os.path.dirname(page), path))
        assert os.path.exists(resolved), "{}: link to {}".format(page, target)


def _config_keys(node, prefix):
    from detectron2.config import CfgNode

    keys = []
    for name, value in node.items():
        if isinstance(value, CfgNode):
            keys += _config_keys(value, prefix + name + ".")
        else:
            keys.append(prefix + name)
    return keys


def test_the_config_doc_names_every_refseg_key():
    from detectron2.config import get_cfg

    from refseg_d2 import add_refseg_config

    cfg = get_cfg()
    add_refseg_config(cfg)
    keys = _config_keys(cfg.MODEL.REFSEG, "MODEL.REFSEG.")
    assert len(keys) >= 10
    text = open(os.path.join(REPO, "docs", "CONFIG.md")).read()
    missing = [k for k in keys if "`{}`".format(k) not in text]
    assert missing == [], "docs/CONFIG.md does not document: {}".format(missing)


@pytest.mark.parametrize("page", PAGES)
def test_every_python_block_of_the_docs_runs_as_written(page, workspace, monkeypatch):
    monkeypatch.chdir(workspace)
    rng = np.random.RandomState(1)
    cat = rng.randint(0, 255, (120, 160, 3)).astype(np.uint8)
    cat_mask = np.zeros((120, 160), dtype=bool)
    cat_mask[30:90, 40:120] = True
    Image.fromarray(cat).save("cat.jpg")
    namespace = {
        "cat_mask": cat_mask,
        "dog_rgb": rng.randint(0, 255, (240, 320, 3)).astype(np.uint8),
        "image": rng.randint(0, 255, (96, 128, 3)).astype(np.uint8),
    }
    blocks = readme_blocks("python", page)
    for line, code in blocks:
        exec(compile(code, "{}:{}".format(page, line), "exec"), namespace)
    for path in PYTHON_OUTPUTS.get(page, []):
        assert os.path.isfile(os.path.join(workspace, path)), "{}: no {}".format(page, path)
    if "results" in namespace:
        assert set(namespace["results"]) >= {"bbox"}


def _dry_check(tool, args, workspace):
    """
    The command's options parse with the tool's own parser; its datasets are registered (or
    registered by the command itself, --register).
    """
    from detectron2.data import DatasetCatalog

    from refseg_d2.data.datasets import resolve_datasets
    from refseg_d2.engine import build_cfg

    spec = importlib.util.spec_from_file_location("readme_tool", os.path.join(REPO, tool))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    parse = module.get_parser().parse_args if hasattr(module, "get_parser") else module.parse_args
    parsed = parse(args)
    if not hasattr(parsed, "config_file"):
        return
    cfg = build_cfg(os.path.join(workspace, parsed.config_file), parsed.opts)
    names = list(cfg.DATASETS.REFERENCE) + list(cfg.DATASETS.TEST)
    registered_here = [n for n, _, _ in getattr(parsed, "register", None) or []]
    names = [n for n in names if n not in registered_here]
    if getattr(parsed, "dataset", None):
        names.append(parsed.dataset)
    if getattr(parsed, "shots", None):
        for k in parsed.shots:
            for seed in parsed.seeds or [None]:
                names += module.reference_names(list(cfg.DATASETS.REFERENCE), k, seed)
    resolve_datasets(names)
    missing = [n for n in names if n not in DatasetCatalog.list()]
    assert missing == [], "{} {}: datasets not registered: {}".format(tool, args, missing)


@pytest.mark.parametrize("page", PAGES)
def test_every_command_of_the_docs_runs_as_written(page, workspace):
    env = dict(os.environ)
    for line, text in readme_blocks("bash", page):
        for command in commands(text):
            kind = _kind(command)
            where = "{}:{}: {}".format(page, line, " ".join(command))
            if kind == "not run":
                if command[0] == "export":
                    key, value = command[1].split("=", 1)
                    env[key] = value
                continue
            tool, args = _argv(command)
            if kind == "dry":
                _dry_check(tool, args, workspace)
                continue
            proc = subprocess.run([sys.executable, tool] + args, cwd=workspace, env=env,
                                  capture_output=True, text=True, timeout=900)
            assert proc.returncode == 0, where + "\n" + (proc.stdout + proc.stderr)[-4000:]
    for path in COMMAND_OUTPUTS.get(page, []):
        full = os.path.join(workspace, path)
        assert os.path.isfile(full) or (os.path.isdir(full) and os.listdir(full)), \
            "{}: no {}".format(page, path)


def test_the_make_targets_the_docs_name_exist():
    makefile = open(os.path.join(REPO, "Makefile")).read()
    for _, text in [b for page in PAGES for b in readme_blocks("bash", page)]:
        for command in commands(text):
            if command[0] == "make":
                target = command[1]
                assert re.search(r"^{}:".format(re.escape(target)), makefile, re.M), target
            if command[0].endswith(".sh"):
                assert os.path.isfile(os.path.join(REPO, command[0])), command[0]
