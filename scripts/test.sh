#!/usr/bin/env bash
# test.sh: what CI runs. Configure (Ninja, RelWithDebInfo) + build + ctest, with a real
# single-node Ceph (scripts/ceph-dev.sh) for the `ceph`-labelled tests, always torn down.
#   bash scripts/test.sh                      # everything
#   bash scripts/test.sh -L unit              # one label (unit | integration | ceph | gpu)
#   bash scripts/test.sh -L unit -- -R Spec   # extra ctest arguments after --
#   options: --build-dir DIR (default build), --no-ceph, -j N (build and ctest parallelism)
# Env: GANTRY_CMAKE_ARGS (extra configure flags), CTEST_PARALLEL_LEVEL (default nproc).
set -euo pipefail
cd "$(dirname "$0")/.."

build_dir=build
labels=()
ctest_extra=()
use_ceph=1
jobs=$(nproc)
while [[ $# -gt 0 ]]; do
  case $1 in
    -L|--label) labels+=("$2"); shift 2 ;;
    --build-dir) build_dir=$2; shift 2 ;;
    --no-ceph) use_ceph=0; shift ;;
    -j) jobs=$2; shift 2 ;;
    -h|--help) sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    --) shift; ctest_extra+=("$@"); break ;;
    *) ctest_extra+=("$1"); shift ;;
  esac
done

t0=$(date +%s)
step() { echo "==> $*" >&2; }

step "configure ($build_dir, RelWithDebInfo)"
mkdir -p "$build_dir"
# shellcheck disable=SC2086
cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo ${GANTRY_CMAKE_ARGS:-} \
  > "$build_dir/configure.log" 2>&1 ||
  { tail -40 "$build_dir/configure.log" >&2; echo "test: configure failed" >&2; exit 1; }

step "build (-j$jobs)"
cmake --build "$build_dir" -j "$jobs" ||
  { echo "test: build failed" >&2; exit 1; }

# A real Ceph cluster for the ceph label, unless only other labels were asked for.
wants_ceph=$use_ceph
if [[ ${#labels[@]} -gt 0 ]]; then
  wants_ceph=0
  for l in "${labels[@]}"; do [[ $l == *ceph* && $use_ceph == 1 ]] && wants_ceph=1; done
fi
ceph_dir=""
cleanup() {
  if [[ -n $ceph_dir ]]; then
    step "stopping dev Ceph ($ceph_dir)"
    bash scripts/ceph-dev.sh stop "$ceph_dir" >&2 || echo "test: warning: ceph-dev stop failed" >&2
  fi
}
trap cleanup EXIT
if [[ $wants_ceph == 1 && -f scripts/ceph-dev.sh ]]; then
  ceph_dir=$(mktemp -d /tmp/gantry-test-ceph.XXXXXX)
  step "starting dev Ceph in $ceph_dir"
  if ! ceph_env=$(bash scripts/ceph-dev.sh start "$ceph_dir"); then
    echo "test: error: scripts/ceph-dev.sh start failed; ceph tests cannot run" >&2
    exit 1
  fi
  eval "$ceph_env"
  echo "$ceph_env" | sed 's/^/    /' >&2
fi

ctest_args=(--test-dir "$build_dir" --output-on-failure
            --parallel "${CTEST_PARALLEL_LEVEL:-$jobs}"
            --output-junit "$PWD/$build_dir/test-results.xml")
for l in "${labels[@]}"; do ctest_args+=(-L "$l"); done
step "ctest ${labels[*]:+-L ${labels[*]}} ${ctest_extra[*]:-}"
set +e
ctest "${ctest_args[@]}" "${ctest_extra[@]}" 2>&1 | tee "$build_dir/ctest.log"
rc=${PIPESTATUS[0]}
set -e

summary=$(grep -E "tests passed|tests failed" "$build_dir/ctest.log" | tail -1 || true)
echo
echo "==== gantry test summary ===="
echo "labels:   ${labels[*]:-all}"
echo "ceph:     $([[ -n $ceph_dir ]] && echo "started ($ceph_dir)" || echo "not started")"
echo "result:   ${summary:-no tests ran}"
skipped=$(grep -cE "^\s+[0-9]+ - .*\(Skipped\)" "$build_dir/ctest.log" || true)
echo "skipped:  ${skipped:-0} (GPU tests skip without a GPU; see ctest.log)"
grep -E "^\s+[0-9]+ - " "$build_dir/ctest.log" | grep -v "(Skipped)" | sed 's/^/failed:  /' || true
echo "junit:    $build_dir/test-results.xml"
echo "time:     $(( $(date +%s) - t0 )) s"
exit "$rc"
