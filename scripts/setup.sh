#!/usr/bin/env bash
# setup.sh: installs every Debian 12 package Gantry needs to build, test and run.
# Idempotent: checks dpkg first, runs apt-get update/install only when something is missing.
# Also the npm packages of tools/k8s-validate (from its package-lock.json) when npm exists.
# Run as root (fresh containers have no sudo); uses sudo when not root and sudo exists.
#   bash scripts/setup.sh            # install what is missing
#   bash scripts/setup.sh --check    # only report missing packages (exit 1 if any)
set -euo pipefail

# One package per line; append here (and say why in the commit).
PACKAGES=(
  build-essential cmake ninja-build pkg-config
  libdnnl-dev                                  # CPU GEMM (oneDNN)
  protobuf-compiler libprotobuf-dev            # proto/
  libzmq3-dev cppzmq-dev                       # coordinator protocol
  libyaml-cpp-dev libcli11-dev nlohmann-json3-dev libsqlite3-dev
  libgtest-dev libgmock-dev
  python3-torch python3-numpy                  # reference models and peer benchmarks
  fortunes                                     # a real text corpus for demos
  libtcmalloc-minimal4                         # peer benchmarks run PyTorch with tcmalloc
  libopenblas0-pthread                         # PyTorch peer: OpenBLAS instead of the reference BLAS
  ceph-mon ceph-osd ceph-common librados-dev libradospp-dev python3-rados  # storage/ceph
  openmpi-bin libopenmpi-dev                   # comm/mpi, mpirun bootstrap
  libgloo-dev                                  # peer allreduce benchmark
  libibverbs-dev                               # comm/verbs (HCA discovery)
  iproute2 uuid-runtime                        # network tests, ceph-dev.sh
  prometheus                                   # promtool validates /metrics output in tests
)

check_only=0
if [[ ${1:-} == --check ]]; then check_only=1; fi

missing=()
for pkg in "${PACKAGES[@]}"; do
  status=$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)
  [[ $status == installed ]] || missing+=("$pkg")
done

# npm packages of tools/k8s-validate (kubernetes-models, typescript, yaml: the offline check of
# `gantry render k8s` manifests in render_k8s_test), exactly as its package-lock.json pins them.
# Silent when node_modules already matches the lock; nothing is downloaded at build or test time.
npm_tools() {
  local dir stamp
  dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/tools/k8s-validate"
  [[ -f $dir/package-lock.json ]] || return 0
  if ! command -v npm > /dev/null; then
    echo "setup: warning: npm not found: $dir not installed (render_k8s_test skips its schema checks)" >&2
    return 0
  fi
  stamp=$(sha256sum "$dir/package-lock.json" | cut -d' ' -f1)
  [[ $(cat "$dir/node_modules/.gantry-lock-sha256" 2>/dev/null) == "$stamp" ]] && return 0
  if [[ $check_only == 1 ]]; then
    echo "setup: npm packages of $dir missing or out of date"
    return 1
  fi
  (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error) > /tmp/gantry-setup-npm.log 2>&1 ||
    { echo "setup: error: npm ci in $dir failed; see /tmp/gantry-setup-npm.log" >&2;
      tail -20 /tmp/gantry-setup-npm.log >&2; exit 1; }
  echo "$stamp" > "$dir/node_modules/.gantry-lock-sha256"
  echo "setup: installed the npm packages of $dir"
}
# npm itself (Debian's nodejs + npm) only where no npm is on PATH: a machine may carry a newer
# Node.js of its own.
if ! command -v npm > /dev/null; then missing+=(nodejs npm); fi
npm_ok=1
if command -v npm > /dev/null; then npm_tools || npm_ok=0; fi

if [[ ${#missing[@]} -eq 0 ]]; then
  echo "setup: all ${#PACKAGES[@]} packages installed"
  exit $((1 - npm_ok))
fi
echo "setup: missing ${#missing[@]} package(s): ${missing[*]}"
if [[ $check_only == 1 ]]; then exit 1; fi

SUDO=()
if [[ $(id -u) -ne 0 ]]; then
  if command -v sudo > /dev/null; then
    SUDO=(sudo)
  else
    echo "setup: error: run as root (or install sudo) to install packages" >&2
    exit 1
  fi
fi
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -qq
"${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" > /tmp/gantry-setup-apt.log ||
  { echo "setup: error: apt-get install failed; see /tmp/gantry-setup-apt.log" >&2;
    tail -20 /tmp/gantry-setup-apt.log >&2; exit 1; }
echo "setup: installed ${missing[*]}"
npm_tools
