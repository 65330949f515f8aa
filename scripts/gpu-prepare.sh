#!/usr/bin/env bash
# gpu-prepare.sh: run on this (Debian) machine before sending the checkout to a bare GPU box
# (CUDA, CMake, a compiler; none of our Debian libraries, no package registry). Fills
# .gpu-deps/ (git-ignored, ~6 MB) with what scripts/gpu-check.sh needs there:
#   googletest/  Debian's googletest sources (/usr/src/googletest)
#   root/        yaml-cpp and nlohmann-json unpacked from their Debian packages (dpkg -x), so
#                the check also builds base/storage/train and runs the GPU training tests
# Then, with the device tool: run `bash scripts/gpu-check.sh` with carry [".gpu-deps"].
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
deps="$repo/.gpu-deps"
src=/usr/src/googletest
if [ ! -f "$src/CMakeLists.txt" ]; then
  echo "gpu-prepare: $src is missing; run scripts/setup.sh (it installs Debian googletest)" >&2
  exit 1
fi
mkdir -p "$deps"
rm -rf "$deps/googletest" "$deps/root" "$deps/debs"
cp -a "$src" "$deps/googletest"

mkdir -p "$deps/debs" "$deps/root"
pkgs=(libyaml-cpp-dev libyaml-cpp0.7 nlohmann-json3-dev)
if (cd "$deps/debs" && apt-get download -q "${pkgs[@]}" >/dev/null 2>&1); then
  for deb in "$deps"/debs/*.deb; do dpkg -x "$deb" "$deps/root"; done
  rm -rf "$deps/debs"
  echo "gpu-prepare: unpacked ${pkgs[*]} into $deps/root"
else
  rm -rf "$deps/debs" "$deps/root"
  echo "gpu-prepare: could not download ${pkgs[*]} (no apt access?); the GPU check will" \
       "build kernels and comm only, without the training tests" >&2
fi
echo "gpu-prepare: $(du -sh "$deps" | cut -f1) in $deps; carry \".gpu-deps\""
