// f32 -> bf16 rounding of GEMM operands for the bf16 matmul path (gemm.cc).
#include <cuda_bf16.h>

#include "kernels/cuda/check.h"
#include "kernels/cuda/context.h"
#include "kernels/cuda/gemm.h"

namespace gantry::kernels::cuda {
namespace {

__global__ void CastToBf16Kernel(const float* __restrict__ src, __nv_bfloat16* __restrict__ dst,
                                 int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    dst[i] = __float2bfloat16_rn(src[i]);
  }
}

}  // namespace

Status CastToBf16(const float* src, void* dst, int64_t n, cudaStream_t stream) {
  if (n <= 0) return OkStatus();
  CastToBf16Kernel<<<GridFor(n), kBlock, 0, stream>>>(src, static_cast<__nv_bfloat16*>(dst), n);
  GANTRY_CUDA_CHECK_LAUNCH("CastToBf16");
  return OkStatus();
}

}  // namespace gantry::kernels::cuda
