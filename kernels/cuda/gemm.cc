// Row-major SGEMM through cuBLAS (operand swap; see gemm.h), f32 or bf16 inputs.
#include "kernels/cuda/gemm.h"

#include <climits>
#include <string>

#include "kernels/cuda/check.h"
#include "kernels/runtime.h"

namespace gantry::kernels::cuda {

namespace {

// Elements from the first to one past the last element an operand of `rows` x `cols` (row
// stride ld, batch stride `stride`, `batch` matrices) touches.
int64_t Span(int64_t rows, int64_t cols, int64_t ld, int64_t stride, int64_t batch) {
  if (rows == 0 || cols == 0 || batch == 0) return 0;
  return (batch - 1) * stride + (rows - 1) * ld + cols;
}

}  // namespace

Status GemmRowMajor(Context* ctx, cudaStream_t stream, const RowMajorGemm& g) {
  for (int64_t v : {g.m, g.n, g.k, g.lda, g.ldb, g.ldc, g.batch}) {
    if (v < 0 || v > INT_MAX) {
      return InvalidArgumentError("GEMM dimension " + std::to_string(v) +
                                  " is outside cuBLAS's int range; split the operation");
    }
  }
  if (g.m == 0 || g.n == 0 || g.batch == 0) return OkStatus();
  // k == 0: an empty sum. Not left to cuBLAS (what it does then is not documented; PyTorch
  // special-cases it too): C = beta * C, zeros for beta == 0 whatever C held, as on the CPU.
  if (g.k == 0) {
    return ScaleMatrices(g.c, g.m, g.n, g.ldc > 0 ? g.ldc : g.n, g.stride_c, g.batch, g.beta,
                         stream);
  }
  cublasHandle_t handle = ctx->cublas;
  GANTRY_CUBLAS_RETURN_IF_ERROR(cublasSetStream(handle, stream));
  const cublasOperation_t op_a = g.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t op_b = g.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  const int m = static_cast<int>(g.m), n = static_cast<int>(g.n), k = static_cast<int>(g.k);
  // cuBLAS requires ld >= 1 even for empty operands.
  const int lda = g.lda > 0 ? static_cast<int>(g.lda) : 1;
  const int ldb = g.ldb > 0 ? static_cast<int>(g.ldb) : 1;
  const int ldc = g.ldc > 0 ? static_cast<int>(g.ldc) : 1;
  const bool bf16 = g.allow_bf16 && CudaMatmulPrecision() == MatmulPrecision::kBf16 &&
                    2.0 * double(g.m) * double(g.n) * double(g.k) >= CudaBf16MinFlops();
  if (bf16) {
    // Round exactly the spans the product reads; strides and offsets stay as they are.
    const int64_t span_a = Span(g.trans_a ? g.k : g.m, g.trans_a ? g.m : g.k, lda, g.stride_a, g.batch);
    const int64_t span_b = Span(g.trans_b ? g.n : g.k, g.trans_b ? g.k : g.n, ldb, g.stride_b, g.batch);
    const size_t bytes_a = (size_t(span_a) * 2 + 255) / 256 * 256;  // keep B 256-byte aligned
    GANTRY_ASSIGN_OR_RETURN(void* scratch, GemmScratch(ctx, bytes_a + size_t(span_b) * 2));
    void* a16 = scratch;
    void* b16 = static_cast<char*>(scratch) + bytes_a;
    GANTRY_RETURN_IF_ERROR(CastToBf16(g.a, a16, span_a, stream));
    GANTRY_RETURN_IF_ERROR(CastToBf16(g.b, b16, span_b, stream));
    if (g.batch == 1) {
      GANTRY_CUBLAS_RETURN_IF_ERROR(cublasGemmEx(handle, op_b, op_a, n, m, k, &g.alpha, b16,
                                                 CUDA_R_16BF, ldb, a16, CUDA_R_16BF, lda,
                                                 &g.beta, g.c, CUDA_R_32F, ldc,
                                                 CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    } else {
      GANTRY_CUBLAS_RETURN_IF_ERROR(cublasGemmStridedBatchedEx(
          handle, op_b, op_a, n, m, k, &g.alpha, b16, CUDA_R_16BF, ldb, g.stride_b, a16,
          CUDA_R_16BF, lda, g.stride_a, &g.beta, g.c, CUDA_R_32F, ldc, g.stride_c,
          static_cast<int>(g.batch), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    }
    return OkStatus();
  }
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
