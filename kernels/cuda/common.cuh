// Device helpers shared by the .cu files: warp/block reductions and the bad-index recorder.
// Reductions are deterministic (fixed tree order), so repeated runs give identical bits.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "base/status.h"
#include "kernels/cuda/check.h"
#include "kernels/cuda/context.h"

namespace gantry::kernels::cuda {

inline constexpr unsigned kFullMask = 0xffffffffu;

template <typename T>
__device__ __forceinline__ T WarpSum(T v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(kFullMask, v, o);
  return v;
}
__device__ __forceinline__ float WarpMax(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(kFullMask, v, o));
  return v;
}

// Sum over the whole block (blockDim.x a multiple of 32, <= 1024); every thread gets the result.
// `shared` needs 32 elements. Contains __syncthreads: call from all threads.
template <typename T>
__device__ T BlockSum(T v, T* shared) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  v = WarpSum(v);
  __syncthreads();  // `shared` may still be read from a previous call
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  T total = lane < warps ? shared[lane] : T(0);
  return WarpSum(total);
}
__device__ inline float BlockMax(float v, float* shared) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  v = WarpMax(v);
  __syncthreads();
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  float m = lane < warps ? shared[lane] : -INFINITY;
  return WarpMax(m);
}

// Records the first out-of-range index seen on this device (see IndexError in context.h).
__device__ inline void ReportBadIndex(IndexError* slot, IndexOp op, long long position,
                                      long long value, long long bound) {
  if (atomicCAS(&slot->op, 0, -1) == 0) {
    slot->position = position;
    slot->value = value;
    slot->bound = bound;
    __threadfence_system();
    atomicExch(&slot->op, static_cast<int>(op));
  }
}

// Elementwise launcher: f(i) for i in [0, n) with a grid-stride loop (f is a __device__ lambda).
template <typename F>
__global__ void ElementwiseKernel(int64_t n, F f) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    f(i);
  }
}
template <typename F>
Status LaunchElementwise(int64_t n, cudaStream_t stream, F f) {
  if (n == 0) return OkStatus();
  ElementwiseKernel<<<GridFor(n), kBlock, 0, stream>>>(n, f);
  GANTRY_CUDA_CHECK_LAUNCH("elementwise");
  return OkStatus();
}

// Column sums of a [rows, cols] matrix given by f(r, c): out[c] += sum_r f(r, c).
// Rows are split into chunks reduced in parallel (partials in the context scratch), then the
// chunks are summed in a fixed order, so the result is deterministic.
inline constexpr int kColTile = 32, kColRowsPerPass = 8;
template <typename F>
__global__ void ColumnPartialKernel(F f, int64_t rows, int64_t cols, int64_t rows_per_chunk,
                                    float* out, bool direct) {
  __shared__ float sh[kColRowsPerPass][kColTile + 1];
  const int64_t col = int64_t(blockIdx.x) * kColTile + threadIdx.x;
  const int64_t r0 = int64_t(blockIdx.y) * rows_per_chunk;
  const int64_t r1 = r0 + rows_per_chunk < rows ? r0 + rows_per_chunk : rows;
  float acc = 0.0f;
  if (col < cols) {
    for (int64_t r = r0 + threadIdx.y; r < r1; r += kColRowsPerPass) acc += f(r, col);
  }
  sh[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y == 0 && col < cols) {
    float s = 0.0f;
    for (int i = 0; i < kColRowsPerPass; ++i) s += sh[i][threadIdx.x];
    if (direct) {
      out[col] += s;
    } else {
      out[int64_t(blockIdx.y) * cols + col] = s;
    }
  }
}
__global__ void ColumnFinishKernel(const float* partial, int64_t chunks, int64_t cols, float* out);

template <typename F>
Status ColumnSumAccumulate(const OpEnv& env, int64_t rows, int64_t cols, float* out, F f) {
  if (rows == 0 || cols == 0) return OkStatus();
  const int64_t col_blocks = (cols + kColTile - 1) / kColTile;
  int64_t chunks = (2 * 132 + col_blocks - 1) / col_blocks;  // ~2 blocks per H100/H200 SM
  const int64_t max_chunks = (rows + 63) / 64;               // >= 64 rows per chunk
  if (chunks > max_chunks) chunks = max_chunks;
  if (chunks < 1) chunks = 1;
  const int64_t rows_per_chunk = (rows + chunks - 1) / chunks;
  chunks = (rows + rows_per_chunk - 1) / rows_per_chunk;
  const dim3 block(kColTile, kColRowsPerPass);
  const dim3 grid(static_cast<unsigned>(col_blocks), static_cast<unsigned>(chunks));
  if (chunks == 1) {
    ColumnPartialKernel<<<grid, block, 0, env.stream>>>(f, rows, cols, rows_per_chunk, out, true);
    GANTRY_CUDA_CHECK_LAUNCH("ColumnPartialKernel");
    return OkStatus();
  }
  GANTRY_ASSIGN_OR_RETURN(void* scratch, Scratch(env.ctx, chunks * cols * sizeof(float)));
  float* partial = static_cast<float*>(scratch);
  ColumnPartialKernel<<<grid, block, 0, env.stream>>>(f, rows, cols, rows_per_chunk, partial,
                                                      false);
  GANTRY_CUDA_CHECK_LAUNCH("ColumnPartialKernel");
  ColumnFinishKernel<<<GridFor(cols), kBlock, 0, env.stream>>>(partial, chunks, cols, out);
  GANTRY_CUDA_CHECK_LAUNCH("ColumnFinishKernel");
  return OkStatus();
}

// Rows of a tensor whose last dim is the feature dim (numel / last dim; 0 for empty).
inline int64_t RowsOf(const Tensor& t) {
  const int64_t last = t.rank() == 0 ? 1 : t.dim(-1);
  return last == 0 ? 0 : t.numel() / last;
}

}  // namespace gantry::kernels::cuda
