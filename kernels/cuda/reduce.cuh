// Full reductions to one value on the device, deterministic (fixed block and tree order):
// stage 1 writes one partial per block into the context scratch, stage 2 (one block) combines
// them and stores out[0] = total * multiplier. No host synchronisation.
#pragma once

#include <cuda_runtime.h>

#include "kernels/cuda/common.cuh"

namespace gantry::kernels::cuda {

inline constexpr int kReduceBlock = 512;
inline constexpr int kReduceMaxBlocks = 1024;

template <typename Acc, typename F>
__global__ void ReducePartialKernel(int64_t n, F f, Acc* partial) {
  __shared__ Acc shared[32];
  Acc acc = Acc(0);
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    acc += static_cast<Acc>(f(i));
  }
  acc = BlockSum(acc, shared);
  if (threadIdx.x == 0) partial[blockIdx.x] = acc;
}

template <typename Acc, typename Out>
__global__ void ReduceFinishKernel(const Acc* partial, int blocks, Acc multiplier, Out* out) {
  __shared__ Acc shared[32];
  Acc acc = Acc(0);
  for (int i = threadIdx.x; i < blocks; i += blockDim.x) acc += partial[i];
  acc = BlockSum(acc, shared);
  if (threadIdx.x == 0) out[0] = static_cast<Out>(acc * multiplier);
}

// out[0] = multiplier * sum_{i < n} f(i), accumulated in Acc (float or double).
template <typename Acc, typename Out, typename F>
Status SumReduce(const OpEnv& env, int64_t n, Acc multiplier, Out* out, F f) {
  int64_t blocks = (n + kReduceBlock - 1) / kReduceBlock;
  if (blocks > kReduceMaxBlocks) blocks = kReduceMaxBlocks;
  if (blocks < 1) blocks = 1;
  GANTRY_ASSIGN_OR_RETURN(void* scratch, Scratch(env.ctx, blocks * sizeof(Acc)));
  Acc* partial = static_cast<Acc*>(scratch);
  ReducePartialKernel<Acc><<<static_cast<unsigned>(blocks), kReduceBlock, 0, env.stream>>>(
      n, f, partial);
  GANTRY_CUDA_CHECK_LAUNCH("ReducePartialKernel");
  ReduceFinishKernel<Acc, Out><<<1, kReduceBlock, 0, env.stream>>>(
      partial, static_cast<int>(blocks), multiplier, out);
  GANTRY_CUDA_CHECK_LAUNCH("ReduceFinishKernel");
  return OkStatus();
}

}  // namespace gantry::kernels::cuda
