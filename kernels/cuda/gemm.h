// Row-major (strided-batched) SGEMM on cuBLAS, which is column-major: a row-major X with row
// stride ld is a column-major X^T with the same ld, so C = op(A) op(B) is computed as
// C^T = op(B)^T op(A)^T by swapping the operands. Used by linear.cu and attention.cu.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <cstdint>

#include "base/status.h"

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
};

// Queues the GEMM on `stream`. kInvalidArgument if a dimension exceeds cuBLAS's int range.
Status GemmRowMajor(cublasHandle_t handle, cudaStream_t stream, const RowMajorGemm& g);

}  // namespace gantry::kernels::cuda
