"""The plugin installs with plain pip into an environment that already holds the stack."""
import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_pip_install_editable_into_the_installed_stack_changes_nothing_but_refseg_d2(tmp_path):
    report = str(tmp_path / "report.json")
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--no-index", "--no-build-isolation",
         "--disable-pip-version-check", "--quiet", "--report", report, "-e", REPO],
        capture_output=True, text=True, cwd=str(tmp_path),
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    with open(report) as f:
        installs = json.load(f)["install"]
    names = sorted(item["metadata"]["name"].lower().replace("_", "-") for item in installs)
    assert names == ["refseg-d2"], names


def test_building_a_model_without_the_dinov2_code_names_the_command_that_installs_it():
    code = (
        "import sys; sys.modules['dinov2'] = None\n"
        "from refseg_d2.modeling.encoders import DinoV2Encoder\n"
        "DinoV2Encoder('dinov2_vits14', weights='', input_size=28, random_init=True)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode != 0
    assert "pip install --no-deps dinov2==0.0.1.dev2" in done.stderr, done.stderr[-2000:]
