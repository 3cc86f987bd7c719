#!/usr/bin/env bash
# Installs Detectron2 into the given interpreter's environment.
# 1. The official source (GitHub), the way Detectron2's INSTALL.md says, when GitHub is reachable.
# 2. Otherwise the packaged copy of upstream Detectron2 on PyPI (sal-detectron2, a CPython 3.10
#    wheel whose pure-Python code runs on newer Pythons; its compiled _C is then unused, which only
#    disables deformable convolution, rotated-box ops and the fast COCOeval, none of which we use).
set -euo pipefail
PY="${1:-python}"
log() { echo "[install] $*"; }

if "$PY" -c "import detectron2.engine" 2>/dev/null; then
  log "detectron2 already importable: $("$PY" -c 'import detectron2, os; print(os.path.dirname(detectron2.__file__))')"
  exit 0
fi

URL="https://github.com/facebookresearch/detectron2.git"
if timeout 20 git ls-remote "$URL" HEAD >/dev/null 2>&1; then
  log "detectron2 from the official source ($URL)"
  "$PY" -m pip install -q --no-build-isolation "git+$URL"
  exit 0
fi

log "GitHub unreachable: detectron2 from the PyPI package sal-detectron2 (upstream code, pure-Python use)"
SITE=$("$PY" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
TARGET="$SITE/_detectron2_pkg"
"$PY" -m pip install -q --no-deps --target "$TARGET" --python-version 3.10 \
  --only-binary=:all: "sal-detectron2==0.7.2"
echo "$TARGET" > "$SITE/_detectron2_pkg.pth"
"$PY" -c "import detectron2.engine, detectron2.evaluation" \
  && log "detectron2 ok at $TARGET"
