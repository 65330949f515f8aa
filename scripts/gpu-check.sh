#!/usr/bin/env bash
# gpu-check.sh: builds the CUDA kernels and the NCCL backend on a GPU machine
# (GANTRY_KERNELS_ONLY: needs only CUDA, CMake, a C++ compiler and googletest sources), runs
# every GPU test (each CUDA op against its CPU twin; NCCL collectives on device buffers; the
# Trainer on cuda:0), then, in the time left, bench/gpu_bench against PyTorch CUDA and (when
# train is built) train_bench --device cuda: whole gpt-tiny / mlp-mnist steps against PyTorch.
# Time: everything runs against one budget (GANTRY_GPU_BUDGET_S, default 540 s from the start
# of this script), so that a single device call (600 s at most) ends with the summary printed.
# Configure, build and tests come first; each step's timeout is what is left of the budget;
# each benchmark starts only if enough is left and is cut off (not failed) at the budget.
# Expected: the build is ~6 CPU-minutes of compiling (measured on the dev machine), so 1-2
# minutes on 16 cores, and the ~57 GPU test cases (4 at a time) a few more; none of this has
# been timed on the device machine yet: "build: ok (N s since start)" and the summary's total
# give the real figures.
# googletest: /usr/src/googletest, else .gpu-deps/googletest in the checkout, which
# scripts/gpu-prepare.sh fills from this machine's Debian package (a bare GPU box has none):
# run it here, then send the checkout with `.gpu-deps` carried.
# Without a GPU it still builds and reports that the GPU tests skipped (exit 0).
# Env: GANTRY_GPU_BUILD_DIR (build-gpu), GANTRY_GPU_ARCH (90), GANTRY_GPU_JOBS (nproc),
#      GANTRY_GPU_CMAKE_ARGS (extra configure args), GANTRY_GPU_NO_BENCH=1 (skip the benchmarks),
#      GANTRY_GPU_BUDGET_S (540), GANTRY_GPU_TEST_JOBS (parallel test processes on the GPU: 4
#      when its compute mode is Default, else 1).
# Exit: 0 all passed (or skipped without GPU); 1 configure/build/test/bench failure.
set -uo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${GANTRY_GPU_BUILD_DIR:-$repo/build-gpu}"
arch="${GANTRY_GPU_ARCH:-90}"
jobs="${GANTRY_GPU_JOBS:-$(nproc)}"
budget="${GANTRY_GPU_BUDGET_S:-540}"
log_dir="$build/gpu-check-logs"
generator=()
command -v ninja >/dev/null 2>&1 && generator=(-G Ninja)

step() { printf '\n== %s ==\n' "$*"; }
summary=()
fail=0
note() { summary+=("$1"); }

mkdir -p "$build" "$log_dir" || exit 1
rm -f "$log_dir/bench.txt" "$log_dir/train_bench.txt"  # a warm machine's earlier run
start=$(date +%s)
left() { echo $((start + budget - $(date +%s))); }  # seconds left of the budget
# Timeout for a step: what is left of the budget less `reserve` (for the steps after it and
# the summary), at most `cap`, at least 1.
step_timeout() {
  local reserve="$1" cap="$2" t
  t=$(($(left) - reserve))
  [ "$t" -gt "$cap" ] && t="$cap"
  [ "$t" -lt 1 ] && t=1
  echo "$t"
}

step "GPU"
have_gpu=""
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  gpu="$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | head -1)"
  have_gpu=1
else
  gpu="none (no nvidia-smi or no device)"
fi
echo "$gpu"
note "gpu:        $gpu"

# cuDNN / NCCL: in the CUDA toolkit or the system include dir, or (GPU images built around
# PyTorch) only as pip wheels (nvidia-cudnn-*, nvidia-nccl-*) in python3's site-packages, whose
# libraries carry only .so.N names. Point CMake at them and let the loader find cuDNN's
# sub-libraries and what they need from the other wheels (cuBLAS(Lt), NVRTC, ... of the CUDA
# major the wheel was built for): every site-packages/nvidia/*/lib goes on LD_LIBRARY_PATH,
# after the chosen library's own directory.
dep_args=()
add_ld_path() {  # dir [append]: first (moved there if present), or last unless present
  local rest
  if [ "${2:-}" = append ]; then
    case ":${LD_LIBRARY_PATH:-}:" in *":$1:"*) return 0 ;; esac
    LD_LIBRARY_PATH="${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}$1"
  else
    rest="$(printf '%s' "${LD_LIBRARY_PATH:-}" | tr ':' '\n' | grep -vxF "$1" | paste -sd: -)"
    LD_LIBRARY_PATH="$1${rest:+:$rest}"
  fi
  export LD_LIBRARY_PATH
}
find_wheel_lib() {  # header, library glob -> "-D<PREFIX>_INCLUDE_DIR=.. -D<PREFIX>_LIBRARY=.."
  local header="$1" lib_glob="$2" prefix="$3" site h l d
  for site in $(python3 -c 'import site; print(*site.getsitepackages())' 2>/dev/null); do
    [ -d "$site/nvidia" ] || continue
    h="$(find "$site/nvidia" -name "$header" -path '*include*' 2>/dev/null | head -1)"
    l="$(find "$site/nvidia" -name "$lib_glob" ! -name '*_*' 2>/dev/null | sort | head -1)"
    if [ -n "$h" ] && [ -n "$l" ]; then
      dep_args+=("-D${prefix}_INCLUDE_DIR=$(dirname "$h")" "-D${prefix}_LIBRARY=$l")
      add_ld_path "$(dirname "$l")"
      for d in "$site"/nvidia/*/lib; do [ -d "$d" ] && add_ld_path "$d" append; done
      echo "$prefix from python wheel: $l"
      return 0
    fi
  done
  return 1
}
cuda_home="${CUDA_HOME:-/usr/local/cuda}"
have_header() { [ -f "$cuda_home/include/$1" ] || [ -f "/usr/include/$1" ] || ls /usr/include/*-linux-gnu/"$1" >/dev/null 2>&1; }
have_header cudnn.h || find_wheel_lib cudnn.h 'libcudnn.so*' CUDNN ||
  echo "warning: no cudnn.h in $cuda_home, /usr/include or python wheels; configure will fail (GANTRY_WITH_CUDA=ON)"
have_header nccl.h || find_wheel_lib nccl.h 'libnccl.so*' NCCL || true

gtest_args=()
if [ ! -f /usr/src/googletest/CMakeLists.txt ] && [ -f "$repo/.gpu-deps/googletest/CMakeLists.txt" ]; then
  gtest_args=("-Dgantry_gtest_src=$repo/.gpu-deps/googletest")
  echo "googletest from $repo/.gpu-deps/googletest"
fi

# yaml-cpp + nlohmann-json unpacked by gpu-prepare.sh: configure builds train and its GPU tests.
if [ -d "$repo/.gpu-deps/root/usr" ]; then
  gtest_args+=("-DCMAKE_PREFIX_PATH=$repo/.gpu-deps/root/usr")
  for d in "$repo"/.gpu-deps/root/usr/lib/*-linux-gnu; do
    [ -d "$d" ] && LD_LIBRARY_PATH="$d${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  done
  export LD_LIBRARY_PATH
  echo "yaml-cpp/nlohmann-json from $repo/.gpu-deps/root"
fi

step "configure ($build, sm_$arch, KERNELS_ONLY)"
# shellcheck disable=SC2086  # GANTRY_GPU_CMAKE_ARGS is a list of words on purpose
if timeout "$(step_timeout 240 180)" cmake -S "$repo" -B "$build" "${generator[@]}" -DGANTRY_KERNELS_ONLY=ON \
    -DCMAKE_CUDA_ARCHITECTURES="$arch" -DCMAKE_BUILD_TYPE=Release -DGANTRY_WITH_CUDA=ON \
    "${dep_args[@]}" "${gtest_args[@]}" ${GANTRY_GPU_CMAKE_ARGS:-} >"$log_dir/configure.log" 2>&1; then
  note "configure:  ok"
else
  tail -40 "$log_dir/configure.log"
  note "configure:  FAILED (see $log_dir/configure.log)"
  fail=1
fi

# The tests first; the benchmarks are built later, only when there is time to run them.
targets=(kernels_gpu_test)
bench_targets=(gpu_bench)
if [ "$fail" = 0 ]; then
  # The NCCL test exists when configure found NCCL (toolkit or python wheel).
  if cmake --build "$build" --target help 2>/dev/null | grep -q comm_nccl_test; then
    targets+=(comm_nccl_test)
    note "nccl:       found (comm_nccl_test built)"
  else
    note "nccl:       NOT found: the NCCL backend was not built or tested"
  fi
  if cmake --build "$build" --target help 2>/dev/null | grep -q train_gpu_test; then
    targets+=(train_gpu_test)
    bench_targets+=(train_bench)
    note "train:      built (train_gpu_test: Trainer on cuda:0 vs CPU, resume on the GPU)"
  else
    note "train:      NOT built (no yaml-cpp/nlohmann-json: run scripts/gpu-prepare.sh here first)"
  fi
  step "build ${targets[*]} (-j$jobs)"
  build_timeout=$(step_timeout 60 480)  # keeps a minute for the tests
  if timeout "$build_timeout" cmake --build "$build" --target "${targets[@]}" -j "$jobs" \
      >"$log_dir/build.log" 2>&1; then
    note "build:      ok ($(($(date +%s) - start)) s since start)"
  else
    rc=$?
    grep -E "error|Error" "$log_dir/build.log" | head -40
    if [ "$rc" = 124 ]; then
      note "build:      FAILED: cut off after $build_timeout s by the time budget (see $log_dir/build.log)"
    else
      note "build:      FAILED (see $log_dir/build.log)"
    fi
    fail=1
  fi
fi

# The cuDNN the tests load (and the CUDA major it was built for: a wheel built for another
# major than the toolkit's can fail at cudnnCreate or in some engines).
if [ "$fail" = 0 ] && [ -x "$build/tests/gpu/kernels_gpu_test" ]; then
  cudnn_lib="$(ldd "$build/tests/gpu/kernels_gpu_test" 2>/dev/null | awk '/libcudnn\.so/ {print $3; exit}')"
  if [ -n "$cudnn_lib" ] && [ -f "$cudnn_lib" ]; then
    cudnn_ver="$(python3 - "$cudnn_lib" 2>/dev/null <<'PY'
import ctypes, sys
lib = ctypes.CDLL(sys.argv[1])
lib.cudnnGetVersion.restype = ctypes.c_size_t
lib.cudnnGetCudartVersion.restype = ctypes.c_size_t
v, rt = lib.cudnnGetVersion(), lib.cudnnGetCudartVersion()
print(f"{v // 10000}.{v % 10000 // 100}.{v % 100} for CUDA {rt // 1000}.{rt % 1000 // 10}")
PY
)"
    nvcc_major="$("$cuda_home/bin/nvcc" --version 2>/dev/null | grep -oE 'release [0-9]+' | grep -oE '[0-9]+')"
    cudnn_major="$(echo "$cudnn_ver" | sed -nE 's/.*for CUDA ([0-9]+)\..*/\1/p')"
    msg="${cudnn_ver:-version unknown (no python3?)} ($(readlink -f "$cudnn_lib"))"
    if [ -n "$nvcc_major" ] && [ -n "$cudnn_major" ] && [ "$nvcc_major" != "$cudnn_major" ]; then
      msg="$msg; WARNING: the toolkit is CUDA $nvcc_major"
    fi
  else
    msg="not found by ldd in kernels_gpu_test"
  fi
  echo "cuDNN: $msg"
  note "cudnn:      $msg"
fi

if [ "$fail" = 0 ]; then
  # Several test processes share the GPU unless its compute mode forbids it.
  test_jobs="${GANTRY_GPU_TEST_JOBS:-}"
  if [ -z "$test_jobs" ]; then
    mode="$(nvidia-smi --query-gpu=compute_mode --format=csv,noheader 2>/dev/null | head -1)"
    if [ "$mode" = Default ]; then test_jobs=4; else test_jobs=1; fi
  fi
  # Each test case has its own TIMEOUT (tests/gpu/CMakeLists.txt: 120-180 s, well under the
  # budget); the whole run gets what is left of the budget less the summary's share.
  ctest_timeout=$(step_timeout 15 600)
  step "ctest -L gpu (-j$test_jobs, ${ctest_timeout} s left)"
  (cd "$build" && timeout "$ctest_timeout" ctest -L gpu -j "$test_jobs" --output-on-failure) 2>&1 |
    tee "$log_dir/ctest.log"
  rc=${PIPESTATUS[0]}
  total=$(grep -oE "out of [0-9]+" "$log_dir/ctest.log" | tail -1 | grep -oE "[0-9]+")
  skipped=$(grep -c 'Test *#[0-9]*: .*\*\*\*Skipped' "$log_dir/ctest.log")
  failed=$(grep -oE "[0-9]+ tests failed" "$log_dir/ctest.log" | grep -oE "^[0-9]+")
  total=${total:-0}; failed=${failed:-0}
  if [ "$rc" = 124 ]; then
    note "gpu tests:  FAILED: cut off after $ctest_timeout s by the time budget (see $log_dir/ctest.log)"
    fail=1
  elif [ "$rc" != 0 ] || [ "$total" = 0 ]; then
    note "gpu tests:  FAILED ($failed of $total failed, ctest rc $rc; see $log_dir/ctest.log)"
    fail=1
  elif [ "$skipped" -gt 0 ] && [ -n "$have_gpu" ]; then
    note "gpu tests:  FAILED: nvidia-smi sees a GPU but $skipped of $total tests skipped (the CUDA runtime cannot use it: driver too old for this toolkit?)"
    fail=1
  elif [ "$skipped" -gt 0 ]; then
    note "gpu tests:  built; $skipped of $total SKIPPED (no GPU here)"
  else
    note "gpu tests:  $((total - skipped)) of $total passed, $skipped skipped"
  fi
fi

# Benchmarks in the time left: each needs at least this many seconds to be worth starting.
bench_min_s=60
benches=""
if [ "$fail" = 0 ] && [ "${GANTRY_GPU_NO_BENCH:-0}" != 1 ]; then
  if [ "$(left)" -ge $((bench_min_s + 30)) ]; then
    step "build ${bench_targets[*]} (-j$jobs, $(left) s left)"
    if timeout "$(step_timeout "$bench_min_s" 300)" cmake --build "$build" \
        --target "${bench_targets[@]}" -j "$jobs" >"$log_dir/build-bench.log" 2>&1; then
      benches=1
    else
      grep -E "error|Error" "$log_dir/build-bench.log" | head -40
      note "bench:      NOT run: building ${bench_targets[*]} failed or ran out of time (see $log_dir/build-bench.log)"
    fi
  else
    note "bench:      NOT run: $(left) s left of the ${budget} s budget (GANTRY_GPU_BUDGET_S)"
  fi
fi

# Runs a benchmark with what is left of the budget; cut off at the budget is noted, not failed.
run_bench() {  # name, log file, command...
  local name="$1" out="$2" t rc
  shift 2
  if [ "$(left)" -lt "$bench_min_s" ]; then
    note "$(printf '%-11s' "$name:") NOT run: $(left) s left of the ${budget} s budget (GANTRY_GPU_BUDGET_S)"
    return 0
  fi
  t=$(step_timeout 10 600)
  timeout "$t" "$@" | tee "$out"
  rc=${PIPESTATUS[0]}
  if [ "$rc" = 0 ]; then
    return 0
  elif [ "$rc" = 124 ]; then
    note "$(printf '%-11s' "$name:") cut off after $t s by the time budget (partial output in $out)"
    return 0
  fi
  return 1
}

if [ -n "$benches" ]; then
  step "gpu_bench (ours vs PyTorch CUDA)"
  bench="$build/bench/gpu_bench/gpu_bench"
  if run_bench bench "$log_dir/bench.txt" "$bench"; then
    grep -q "^bench: " <(printf '%s\n' "${summary[@]}") ||
      note "bench:      ok (table in $log_dir/bench.txt)"
  else
    note "bench:      FAILED (see output above)"
    fail=1
  fi
fi

# Whole training steps on the GPU, ours vs PyTorch CUDA (f32, and bf16 vs torch.autocast).
if [ -n "$benches" ] && [ "$fail" = 0 ] && [ -n "$have_gpu" ] &&
   [ -x "$build/bench/train_bench/train_bench" ]; then
  step "train_bench --device cuda (ours vs PyTorch CUDA)"
  if run_bench train_bench "$log_dir/train_bench.txt" "$build/bench/train_bench/train_bench" \
      --device cuda --threads 1 --python "$(command -v python3)"; then
    grep -q "^train_bench: " <(printf '%s\n' "${summary[@]}") ||
      note "train_bench: ok (table in $log_dir/train_bench.txt)"
  else
    note "train_bench: FAILED (see output above)"
    fail=1
  fi
fi

step "summary ($(($(date +%s) - start)) s)"
printf '%s\n' "${summary[@]}"
[ -f "$log_dir/bench.txt" ] && cat "$log_dir/bench.txt"
[ -f "$log_dir/train_bench.txt" ] && cat "$log_dir/train_bench.txt"
if [ "$fail" = 0 ]; then echo "gpu-check: OK"; else echo "gpu-check: FAILED"; fi
exit "$fail"
