"""
Saves that survive a full disk and concurrent writers: every memory, metrics, results or report
file is written through ``refseg_d2.utils.files.atomic_write``.
"""
import os
import subprocess
import sys

import pytest
import torch

from refseg_d2 import MemoryBank, load_memory, save_memory
from refseg_d2.utils.files import atomic_write

SIGNATURE = {"name": "toy", "input_size": 14, "dim": 4}


def _bank(shots, value):
    """A bank of 2 classes x ``shots`` references whose features are all ``value``."""
    features = [torch.full((shots, 4), float(value)), torch.full((shots, 4), float(value))]
    return MemoryBank(4, SIGNATURE).set([1, 2], ["a", "b"], features)


@pytest.fixture
def small_disk(tmp_path):
    """A 256 KiB tmpfs (needs root and a kernel that lets this process mount)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip("cannot mount a tmpfs here: {}".format(done.stderr.strip()))
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_names_the_memory_file_keeps_the_old_one_and_leaves_no_temporary(small_disk):
    path = str(small_disk / "refseg_memory.pth")
    save_memory(_bank(2, 1.0), path)
    before = open(path, "rb").read()
    with pytest.raises(OSError, match=r"Cannot save the memory to .*refseg_memory\.pth: "
                                      r"No space left on device"):
        save_memory(_bank(20000, 2.0), path)  # 2 x 20000 x 4 floats: 640 KB > 256 KiB
    assert open(path, "rb").read() == before
    assert sorted(os.listdir(small_disk)) == ["refseg_memory.pth"]
    assert load_memory(path).instance_features.eq(1.0).all()


def test_a_full_disk_while_writing_json_names_the_file(small_disk):
    path = str(small_disk / "metrics.json")
    with pytest.raises(OSError, match=r"Cannot save the metrics to .*metrics\.json: No space"):
        atomic_write(path, lambda f: f.write("x" * (1 << 20)), mode="w", what="the metrics")
    assert os.listdir(small_disk) == []


def test_an_atomic_write_gets_the_permissions_open_would_give(tmp_path):
    path = str(tmp_path / "out.json")
    atomic_write(path, lambda f: f.write("{}"), mode="w")
    mask = os.umask(0)
    os.umask(mask)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~mask


WRITER = """
import sys, torch
from refseg_d2 import MemoryBank, load_memory, save_memory
path, value, rounds = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
bank = MemoryBank(4, {"name": "toy", "input_size": 14, "dim": 4}).set(
    [1, 2], ["a", "b"], [torch.full((50, 4), value), torch.full((50, 4), value)])
failures = []
for i in range(rounds):
    try:
        save_memory(bank, path)
        got = load_memory(path).instance_features
        assert got.shape == (2, 50, 4) and len(set(got.flatten().tolist())) == 1, got.shape
        assert got.flatten()[0].item() in (1.0, 2.0)
    except Exception as e:
        failures.append("round {}: {!r}".format(i, e))
print("\\n".join(failures))
sys.exit(1 if failures else 0)
"""


def test_two_processes_saving_and_loading_one_memory_path_never_fail_or_see_a_partial_file(
        tmp_path):
    path = str(tmp_path / "shared" / "refseg_memory.pth")
    script = str(tmp_path / "writer.py")
    with open(script, "w") as f:
        f.write(WRITER)
    procs = [subprocess.Popen([sys.executable, script, path, str(v), "60"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for v in (1.0, 2.0)]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    for p, out in zip(procs, outputs):
        assert p.returncode == 0, out[-3000:]
    assert os.listdir(os.path.dirname(path)) == ["refseg_memory.pth"]
