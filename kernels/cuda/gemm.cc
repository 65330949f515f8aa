// Row-major SGEMM through cuBLAS (operand swap; see gemm.h).
#include "kernels/cuda/gemm.h"

#include <climits>
#include <string>

#include "kernels/cuda/check.h"

namespace gantry::kernels::cuda {

Status GemmRowMajor(cublasHandle_t handle, cudaStream_t stream, const RowMajorGemm& g) {
  for (int64_t v : {g.m, g.n, g.k, g.lda, g.ldb, g.ldc, g.batch}) {
    if (v < 0 || v > INT_MAX) {
      return InvalidArgumentError("GEMM dimension " + std::to_string(v) +
                                  " is outside cuBLAS's int range; split the operation");
    }
  }
  if (g.m == 0 || g.n == 0 || g.batch == 0) return OkStatus();
  GANTRY_CUBLAS_RETURN_IF_ERROR(cublasSetStream(handle, stream));
  const cublasOperation_t op_a = g.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t op_b = g.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  const int m = static_cast<int>(g.m), n = static_cast<int>(g.n), k = static_cast<int>(g.k);
  // cuBLAS requires ld >= 1 even for empty operands.
  const int lda = g.lda > 0 ? static_cast<int>(g.lda) : 1;
  const int ldb = g.ldb > 0 ? static_cast<int>(g.ldb) : 1;
  const int ldc = g.ldc > 0 ? static_cast<int>(g.ldc) : 1;
  if (g.batch == 1) {
    GANTRY_CUBLAS_RETURN_IF_ERROR(cublasSgemm(handle, op_b, op_a, n, m, k, &g.alpha, g.b, ldb,
                                              g.a, lda, &g.beta, g.c, ldc));
  } else {
    GANTRY_CUBLAS_RETURN_IF_ERROR(cublasSgemmStridedBatched(
        handle, op_b, op_a, n, m, k, &g.alpha, g.b, ldb, g.stride_b, g.a, lda, g.stride_a,
        &g.beta, g.c, ldc, g.stride_c, static_cast<int>(g.batch)));
  }
  return OkStatus();
}

}  // namespace gantry::kernels::cuda
