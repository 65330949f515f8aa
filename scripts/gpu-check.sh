#!/usr/bin/env bash
# gpu-check.sh: builds the CUDA kernels and the NCCL backend on a GPU machine
# (GANTRY_KERNELS_ONLY: needs only CUDA, CMake, a C++ compiler and googletest sources), runs
# every GPU test (each CUDA op against its CPU twin; NCCL collectives on device buffers), then
# bench/gpu_bench against PyTorch CUDA and (when train is built) train_bench --device cuda:
# whole gpt-tiny / mlp-mnist steps against PyTorch CUDA. About 10 minutes on 16 cores.
# googletest: /usr/src/googletest, else .gpu-deps/googletest in the checkout, which
# scripts/gpu-prepare.sh fills from this machine's Debian package (a bare GPU box has none):
# run it here, then send the checkout with `.gpu-deps` carried.
# Without a GPU it still builds and reports that the GPU tests skipped (exit 0).
# Env: GANTRY_GPU_BUILD_DIR (build-gpu), GANTRY_GPU_ARCH (90), GANTRY_GPU_JOBS (nproc),
#      GANTRY_GPU_CMAKE_ARGS (extra configure args), GANTRY_GPU_NO_BENCH=1 (skip the benchmark).
# Exit: 0 all passed (or skipped without GPU); 1 configure/build/test/bench failure.
set -uo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${GANTRY_GPU_BUILD_DIR:-$repo/build-gpu}"
arch="${GANTRY_GPU_ARCH:-90}"
jobs="${GANTRY_GPU_JOBS:-$(nproc)}"
log_dir="$build/gpu-check-logs"
generator=()
command -v ninja >/dev/null 2>&1 && generator=(-G Ninja)

step() { printf '\n== %s ==\n' "$*"; }
summary=()
fail=0
note() { summary+=("$1"); }

mkdir -p "$build" "$log_dir" || exit 1
start=$(date +%s)

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

# cuDNN / NCCL: in the CUDA toolkit, or (GPU images built around PyTorch) only as pip wheels
# (nvidia-cudnn-*, nvidia-nccl-*) in python3's site-packages, whose libraries carry only
# .so.N names. Point CMake at them and let the loader find cuDNN's sub-libraries.
dep_args=()
find_wheel_lib() {  # header, library glob -> "-D<PREFIX>_INCLUDE_DIR=.. -D<PREFIX>_LIBRARY=.."
  local header="$1" lib_glob="$2" prefix="$3" site h l
  for site in $(python3 -c 'import site; print(*site.getsitepackages())' 2>/dev/null); do
    [ -d "$site/nvidia" ] || continue
    h="$(find "$site/nvidia" -name "$header" -path '*include*' 2>/dev/null | head -1)"
    l="$(find "$site/nvidia" -name "$lib_glob" ! -name '*_*' 2>/dev/null | sort | head -1)"
    if [ -n "$h" ] && [ -n "$l" ]; then
      dep_args+=("-D${prefix}_INCLUDE_DIR=$(dirname "$h")" "-D${prefix}_LIBRARY=$l")
      LD_LIBRARY_PATH="$(dirname "$l")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
      export LD_LIBRARY_PATH
      echo "$prefix from python wheel: $l"
      return 0
    fi
  done
  return 1
}
cuda_home="${CUDA_HOME:-/usr/local/cuda}"
[ -f "$cuda_home/include/cudnn.h" ] || find_wheel_lib cudnn.h 'libcudnn.so*' CUDNN ||
  echo "warning: no cudnn.h in $cuda_home or python wheels; configure will fail (GANTRY_WITH_CUDA=ON)"
[ -f "$cuda_home/include/nccl.h" ] || find_wheel_lib nccl.h 'libnccl.so*' NCCL || true

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
if timeout 300 cmake -S "$repo" -B "$build" "${generator[@]}" -DGANTRY_KERNELS_ONLY=ON \
    -DCMAKE_CUDA_ARCHITECTURES="$arch" -DCMAKE_BUILD_TYPE=Release -DGANTRY_WITH_CUDA=ON \
    "${dep_args[@]}" "${gtest_args[@]}" ${GANTRY_GPU_CMAKE_ARGS:-} >"$log_dir/configure.log" 2>&1; then
  note "configure:  ok"
else
  tail -40 "$log_dir/configure.log"
  note "configure:  FAILED (see $log_dir/configure.log)"
  fail=1
fi

targets=(kernels_gpu_test gpu_bench)
if [ "$fail" = 0 ]; then
  # The NCCL test exists when configure found NCCL (toolkit or python wheel).
  if cmake --build "$build" --target help 2>/dev/null | grep -q comm_nccl_test; then
    targets+=(comm_nccl_test)
    note "nccl:       found (comm_nccl_test built)"
  else
    note "nccl:       NOT found: the NCCL backend was not built or tested"
  fi
  if cmake --build "$build" --target help 2>/dev/null | grep -q train_gpu_test; then
    targets+=(train_gpu_test train_bench)
    note "train:      built (train_gpu_test: Trainer on cuda:0 vs CPU, resume on the GPU)"
  else
    note "train:      NOT built (no yaml-cpp/nlohmann-json: run scripts/gpu-prepare.sh here first)"
  fi
  step "build ${targets[*]} (-j$jobs)"
  if timeout 480 cmake --build "$build" --target "${targets[@]}" -j "$jobs" \
      >"$log_dir/build.log" 2>&1; then
    note "build:      ok ($(($(date +%s) - start)) s since start)"
  else
    grep -E "error|Error" "$log_dir/build.log" | head -40
    note "build:      FAILED (see $log_dir/build.log)"
    fail=1
  fi
fi

if [ "$fail" = 0 ]; then
  step "ctest -L gpu"
  (cd "$build" && timeout 300 ctest -L gpu --output-on-failure) 2>&1 | tee "$log_dir/ctest.log"
  rc=${PIPESTATUS[0]}
  total=$(grep -oE "out of [0-9]+" "$log_dir/ctest.log" | tail -1 | grep -oE "[0-9]+")
  skipped=$(grep -c 'Test *#[0-9]*: .*\*\*\*Skipped' "$log_dir/ctest.log")
  failed=$(grep -oE "[0-9]+ tests failed" "$log_dir/ctest.log" | grep -oE "^[0-9]+")
  total=${total:-0}; failed=${failed:-0}
  if [ "$rc" != 0 ] || [ "$total" = 0 ]; then
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

if [ "$fail" = 0 ] && [ "${GANTRY_GPU_NO_BENCH:-0}" != 1 ]; then
  step "gpu_bench (ours vs PyTorch CUDA)"
  bench="$build/bench/gpu_bench/gpu_bench"
  if timeout 300 "$bench" | tee "$log_dir/bench.txt"; then
    note "bench:      ok (table in $log_dir/bench.txt)"
  else
    note "bench:      FAILED (see output above)"
    fail=1
  fi
fi

# Whole training steps on the GPU, ours vs PyTorch CUDA (f32, and bf16 vs torch.autocast).
if [ "$fail" = 0 ] && [ "${GANTRY_GPU_NO_BENCH:-0}" != 1 ] && [ -n "$have_gpu" ] &&
   [ -x "$build/bench/train_bench/train_bench" ]; then
  step "train_bench --device cuda (ours vs PyTorch CUDA)"
  if timeout 300 "$build/bench/train_bench/train_bench" --device cuda --threads 1 \
      --python "$(command -v python3)" | tee "$log_dir/train_bench.txt"; then
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
