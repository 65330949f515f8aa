#!/usr/bin/env bash
# gpu-prepare.sh: run on this (Debian) machine before sending the checkout to a bare GPU box.
# Copies what scripts/gpu-check.sh needs there and cannot fetch (googletest sources from
# Debian's googletest package) into .gpu-deps/ (git-ignored, ~4 MB). Then, with the device
# tool: run `bash scripts/gpu-check.sh` with carry [".gpu-deps"].
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
src=/usr/src/googletest
if [ ! -f "$src/CMakeLists.txt" ]; then
  echo "gpu-prepare: $src is missing; run scripts/setup.sh (it installs Debian googletest)" >&2
  exit 1
fi
mkdir -p "$repo/.gpu-deps"
rm -rf "$repo/.gpu-deps/googletest"
cp -a "$src" "$repo/.gpu-deps/googletest"
echo "gpu-prepare: $(du -sh "$repo/.gpu-deps" | cut -f1) in $repo/.gpu-deps; carry \".gpu-deps\""
