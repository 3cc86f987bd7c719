#!/usr/bin/env bash
# Download the official checkpoints the paper configs use into checkpoints/ (needs internet):
#   SAM 2 Hiera-L, the original (v1, 2024-07-28) release, and DINOv2 ViT-L/14.
# Usage: tools/download_checkpoints.sh [DEST]   (default: checkpoints/)
set -euo pipefail
DEST="${1:-$(dirname "$0")/../checkpoints}"
mkdir -p "$DEST"
fetch() {
  local url="$1" out="$DEST/$(basename "$1")"
  if [ -s "$out" ]; then echo "have $out"; return; fi
  echo "downloading $url"
  if command -v curl >/dev/null; then curl -fL --retry 3 -o "$out.part" "$url"; else wget -O "$out.part" "$url"; fi
  mv "$out.part" "$out"
}
fetch https://dl.fbaipublicfiles.com/segment_anything_2/072824/sam2_hiera_large.pt
fetch https://dl.fbaipublicfiles.com/dinov2/dinov2_vitl14/dinov2_vitl14_pretrain.pth
echo "done: $DEST"
