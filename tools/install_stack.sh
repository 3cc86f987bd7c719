#!/usr/bin/env bash
# Creates the virtual environment and installs the whole refseg-d2 stack into it.
# Usage: tools/install_stack.sh PYTHON VENV_DIR
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

log "torch 2.14.1 + torchvision 0.29.1"
"${PIP[@]}" "torch==2.14.1" "torchvision==0.29.1" "setuptools<82"

log "runtime dependencies of detectron2, sam2 and dinov2"
"${PIP[@]}" "fvcore>=0.1.5,<0.1.6" "iopath>=0.1.10,<0.1.11" "pycocotools>=2.0.7" \
  "omegaconf>=2.1,<2.4" "hydra-core>=1.3.2" yacs tabulate termcolor cloudpickle \
  matplotlib tqdm Pillow numpy scipy opencv-python-headless pytest "setuptools<82"

bash tools/install_detectron2.sh "$PY"

log "sam2 1.1.0 (without its optional CUDA extension)"
SAM2_BUILD_CUDA=0 "${PIP[@]}" --no-build-isolation "sam2==1.1.0"

log "dinov2 model code (--no-deps: its metadata pins an old torch)"
"${PIP[@]}" --no-deps "dinov2==0.0.1.dev2"

log "refseg_d2 in editable mode"
"${PIP[@]}" --no-deps --no-build-isolation -e .

"$PY" -c "import torch, torchvision, detectron2, sam2, dinov2, refseg_d2; print('[install] ok: torch', torch.__version__, '| cuda', torch.cuda.is_available())"
