// Row-major (strided-batched) SGEMM on cuBLAS, which is column-major: a row-major X with row
// stride ld is a column-major X^T with the same ld, so C = op(A) op(B) is computed as
// C^T = op(B)^T op(A)^T by swapping the operands. Used by linear.cu and attention.cu.
// With CudaMatmulPrecision() kBf16 (kernels/runtime.h), a product of at least
// CudaBf16MinFlops() (2mnk) first rounds the spans of A and B it reads to bf16 (into the
// context's GEMM scratch, same layout) and multiplies those with f32 accumulation and output
// (cublasGemmEx, CUBLAS_COMPUTE_32F): the CPU bf16 path's semantics. A product with
// allow_bf16 = false (attention's per-head products, f32 on the CPU too) always stays f32.
// k == 0 does not reach cuBLAS: C = beta * C (zeros for beta == 0), as the CPU's Sgemm.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <cstdint>

#include "base/status.h"
#include "kernels/cuda/context.h"

namespace gantry::kernels::cuda {

struct RowMajorGemm {
  bool trans_a = false, trans_b = false;
  int64_t m = 0, n = 0, k = 0;  // C [m, n] = alpha * op(A) [m, k] * op(B) [k, n] + beta * C
  float alpha = 1.0f, beta = 0.0f;
  const float* a = nullptr;
  int64_t lda = 0, stride_a = 0;  // lda: row stride of A as stored; stride_a: between batches
  const float* b = nullptr;
  int64_t ldb = 0, stride_b = 0;
  float* c = nullptr;
  int64_t ldc = 0, stride_c = 0;
  int64_t batch = 1;
  bool allow_bf16 = true;  // false: f32 whatever CudaMatmulPrecision() says
};

// Queues the GEMM on `stream` with ctx's cuBLAS handle. kInvalidArgument if a dimension
// exceeds cuBLAS's int range.
Status GemmRowMajor(Context* ctx, cudaStream_t stream, const RowMajorGemm& g);

// dst[i] = bf16(src[i]) (round to nearest even) for i < n, on `stream`: Cast's kernel on raw
// device pointers (memory.cu).
Status CastToBf16(const float* src, void* dst, int64_t n, cudaStream_t stream);

// C = beta * C on `batch` [m, n] matrices (row stride ldc, batch stride stride_c), on `stream`;
// beta == 0 writes zeros, beta == 1 does nothing. GemmRowMajor's k == 0 case (memory.cu).
Status ScaleMatrices(float* c, int64_t m, int64_t n, int64_t ldc, int64_t stride_c, int64_t batch,
                     float beta, cudaStream_t stream);

}  // namespace gantry::kernels::cuda
