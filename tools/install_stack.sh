#!/usr/bin/env bash
# Creates the virtual environment and installs the whole refseg-d2 stack into it.
# Usage: tools/install_stack.sh PYTHON VENV_DIR
# TORCH_INDEX (optional): a PyTorch wheel index for another CUDA build, e.g.
#   TORCH_INDEX=https://download.pytorch.org/whl/cu126 (NVIDIA driver older than 580);
#   unset: torch from PyPI (the CUDA 13.0 build, needs driver >= 580; also what CI uses).
# Safe to re-run: every step is a no-op when its package is already at the pinned version.
set -euo pipefail
PYTHON_SYS="${1:-python3}"
VENV="${2:-.venv}"
cd "$(dirname "$0")/.."

log() { echo "[install] $*"; }

if [ ! -x "$VENV/bin/python" ]; then
  log "creating $VENV with $PYTHON_SYS"
  "$PYTHON_SYS" -m venv "$VENV"
fi
PY="$VENV/bin/python"
PIP=("$PY" -m pip install --disable-pip-version-check -q)

log "build tools (setuptools<82 keeps pkg_resources, which detectron2 imports)"
"${PIP[@]}" "setuptools<82" wheel

TORCH_INDEX="${TORCH_INDEX:-}"
if [ -z "$TORCH_INDEX" ]; then
  log "torch 2.14.1 + torchvision 0.29.1"
  "${PIP[@]}" "torch==2.14.1" "torchvision==0.29.1" "setuptools<82"
else
  log "torch 2.14.1 + torchvision 0.29.1 from TORCH_INDEX=$TORCH_INDEX"
  "${PIP[@]}" --index-url "$TORCH_INDEX" --extra-index-url https://pypi.org/simple \
    "torch==2.14.1" "torchvision==0.29.1"
fi

log "runtime dependencies of detectron2, sam2 and dinov2"
"${PIP[@]}" "fvcore>=0.1.5,<0.1.6" "iopath>=0.1.10,<0.1.11" "pycocotools>=2.0.7" \
  "omegaconf>=2.1,<2.4" "hydra-core>=1.3.2" yacs tabulate termcolor cloudpickle \
  matplotlib tqdm Pillow numpy scipy opencv-python-headless pytest "setuptools<82" \
  "faster-coco-eval==1.8.0"

log "lvis 0.5.3 (LVIS API; --no-deps: it asks for opencv-python, which clashes with the headless build)"
"${PIP[@]}" --no-deps "lvis==0.5.3"

bash tools/install_detectron2.sh "$PY"

log "sam2 1.1.0 (without its optional CUDA extension)"
SAM2_BUILD_CUDA=0 "${PIP[@]}" --no-build-isolation "sam2==1.1.0"

log "dinov2 model code (--no-deps: its metadata pins an old torch)"
"${PIP[@]}" --no-deps "dinov2==0.0.1.dev2"

log "refseg_d2 in editable mode (its requirements resolve against what is installed above)"
"${PIP[@]}" --no-build-isolation -e .

# Headless Chromium for the report render test (tests/test_report_run.py): the Debian package
# chromium-headless-shell (~90 MB download, ~15 s), when we are root with apt-get. Elsewhere,
# install chromium-headless-shell or chromium yourself (the test is skipped, with its reason,
# when there is neither a browser nor root apt-get); REFSEG_NO_BROWSER=1 skips this step.
install_browser() {
  local b
  for b in chromium-headless-shell chromium chromium-browser google-chrome; do
    if command -v "$b" >/dev/null 2>&1; then log "headless browser: $(command -v "$b")"; return 0; fi
  done
  if [ -n "${REFSEG_NO_BROWSER:-}" ]; then log "REFSEG_NO_BROWSER set: no headless browser"; return 0; fi
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    log "WARNING: no headless Chromium, and not root with apt-get: install chromium-headless-shell"
    log "  (Debian: sudo apt-get install chromium-headless-shell) or chromium for the report render test"
    return 0
  fi
  local apt=(env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends)
  log "chromium-headless-shell (Debian package, for the report render test)"
  if ! "${apt[@]}" chromium-headless-shell >/dev/null; then
    log "package lists first (apt-get update)"
    apt-get update -q >/dev/null || true
    "${apt[@]}" chromium-headless-shell >/dev/null || "${apt[@]}" chromium >/dev/null ||
      log "WARNING: could not install chromium-headless-shell: the report render test will fail"
  fi
}
install_browser

"$PY" -c "import torch, torchvision, detectron2, sam2, dinov2, refseg_d2; print('[install] ok: torch', torch.__version__, '| cuda', torch.cuda.is_available())"
"$PY" tools/check_torch_build.py
