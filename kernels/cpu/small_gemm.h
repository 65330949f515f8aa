// Register-blocked GEMM for the small products inside a fused op (attention's per-head
// blocks: m of a few rows, n and k of 16..256), where oneDNN's per-call set-up and packing
// cost more than the arithmetic. No packing, no threads, no allocation: A is read through two
// strides (so a transposed A costs nothing), B row-major, C overwritten or accumulated into.
// AVX-512 tiles of 6 rows x 64 columns where the CPU has AVX-512F, a plain vectorisable loop
// elsewhere; the summation order over k is ascending in both, so results depend only on the
// CPU. Internal.
#pragma once

#include <cstdint>

namespace gantry::kernels::cpu {

// True when this CPU has AVX-512F (checked once): SmallGemm and the attention row kernels
// then take their AVX-512 paths.
bool HaveAvx512F();

// Rows per register tile of SmallGemm on AVX-512: callers that walk a triangle in row tiles
// (causal attention) use it as their tile height.
constexpr int64_t kSmallGemmRows = 6;

// C[i, j] = alpha * sum_{p < k} A(i, p) * B[p, j] for i < m, j < n, where
// A(i, p) = a[i * a_row + p * a_col] (a_row = lda, a_col = 1 for A; a_row = 1, a_col = lda for
// A^T) and B[p, j] = b[p * ldb + j]. C (ldc) is overwritten (k == 0 writes zeros), or with
// `accumulate` the product is added to it: C += alpha * A B.
void SmallGemm(int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t a_row,
               int64_t a_col, const float* b, int64_t ldb, float* c, int64_t ldc,
               bool accumulate = false);

// The plain loop SmallGemm runs without AVX-512 (callable anywhere; for tests).
void SmallGemmPortable(int64_t m, int64_t n, int64_t k, float alpha, const float* a,
                       int64_t a_row, int64_t a_col, const float* b, int64_t ldb, float* c,
                       int64_t ldc, bool accumulate);

// dst[p, j] = src[j, p] for j < rows, p < cols: dst is [cols, ld_dst], src [rows, ld_src].
void TransposeInto(const float* src, int64_t rows, int64_t cols, int64_t ld_src, float* dst,
                   int64_t ld_dst);

}  // namespace gantry::kernels::cpu
