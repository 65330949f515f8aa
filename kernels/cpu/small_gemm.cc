// SmallGemm: 6 x 64 register tiles (24 zmm accumulators, 4 B vectors and one broadcast per
// k step) on AVX-512F, chosen once at run time; a plain loop elsewhere.
#include "kernels/cpu/small_gemm.h"

#include <algorithm>
#include <vector>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define GANTRY_SMALL_GEMM_AVX512 1
#else
#define GANTRY_SMALL_GEMM_AVX512 0
#endif

namespace gantry::kernels::cpu {

namespace {

#if GANTRY_SMALL_GEMM_AVX512
constexpr int kTileCols = 64;  // 4 vectors of 16 floats

// One R x (16 NV) tile of C; the last vector's columns are limited by `last`.
template <int R, int NV, bool Acc>
__attribute__((target("avx512f"))) void Tile(int64_t k, float alpha, const float* a,
                                             int64_t a_row, int64_t a_col, const float* b,
                                             int64_t ldb, float* c, int64_t ldc, __mmask16 last) {
  __m512 acc[R][NV];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_setzero_ps();
  }
  for (int64_t p = 0; p < k; ++p) {
    const float* bp = b + p * ldb;
    __m512 bv[NV];
#pragma GCC unroll 4
    for (int v = 0; v + 1 < NV; ++v) bv[v] = _mm512_loadu_ps(bp + 16 * v);
    bv[NV - 1] = _mm512_maskz_loadu_ps(last, bp + 16 * (NV - 1));
    const float* ap = a + p * a_col;
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const __m512 av = _mm512_set1_ps(ap[r * a_row]);
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_fmadd_ps(av, bv[v], acc[r][v]);
    }
  }
  const __m512 scale = _mm512_set1_ps(alpha);
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
    float* cr = c + r * ldc;
#pragma GCC unroll 4
    for (int v = 0; v + 1 < NV; ++v) {
      __m512 out = _mm512_mul_ps(acc[r][v], scale);
      if constexpr (Acc) out = _mm512_add_ps(_mm512_loadu_ps(cr + 16 * v), out);
      _mm512_storeu_ps(cr + 16 * v, out);
    }
    __m512 out = _mm512_mul_ps(acc[r][NV - 1], scale);
    if constexpr (Acc) out = _mm512_add_ps(_mm512_maskz_loadu_ps(last, cr + 16 * (NV - 1)), out);
    _mm512_mask_storeu_ps(cr + 16 * (NV - 1), last, out);
  }
}

using TileFn = void (*)(int64_t, float, const float*, int64_t, int64_t, const float*, int64_t,
                        float*, int64_t, __mmask16);

template <int R, bool Acc>
constexpr TileFn kRowTiles[4] = {Tile<R, 1, Acc>, Tile<R, 2, Acc>, Tile<R, 3, Acc>,
                                 Tile<R, 4, Acc>};
// [accumulate][rows - 1][vectors - 1]
constexpr const TileFn* kTiles[2][kSmallGemmRows] = {
    {kRowTiles<1, false>, kRowTiles<2, false>, kRowTiles<3, false>, kRowTiles<4, false>,
     kRowTiles<5, false>, kRowTiles<6, false>},
    {kRowTiles<1, true>, kRowTiles<2, true>, kRowTiles<3, true>, kRowTiles<4, true>,
     kRowTiles<5, true>, kRowTiles<6, true>}};

__attribute__((target("avx512f"))) void SmallGemmAvx512(int64_t m, int64_t n, int64_t k,
                                                        float alpha, const float* a,
                                                        int64_t a_row, int64_t a_col,
                                                        const float* b, int64_t ldb, float* c,
                                                        int64_t ldc, bool accumulate) {
  for (int64_t j0 = 0; j0 < n; j0 += kTileCols) {  // a B panel stays in L1 across row tiles
    const int64_t w = std::min<int64_t>(kTileCols, n - j0);
    const int nv = int((w + 15) / 16);
    const __mmask16 last = w % 16 == 0 ? __mmask16(0xffff) : __mmask16((1u << (w % 16)) - 1);
    for (int64_t i0 = 0; i0 < m; i0 += kSmallGemmRows) {
      const int rows = int(std::min<int64_t>(kSmallGemmRows, m - i0));
      kTiles[accumulate][rows - 1][nv - 1](k, alpha, a + i0 * a_row, a_row, a_col, b + j0, ldb,
                               c + i0 * ldc + j0, ldc, last);
    }
  }
}

#endif

}  // namespace

void SmallGemmPortable(int64_t m, int64_t n, int64_t k, float alpha, const float* a,
                       int64_t a_row, int64_t a_col, const float* b, int64_t ldb, float* c,
                       int64_t ldc, bool accumulate) {
  thread_local std::vector<float> row;  // one row of sums; grows once, then reused
  if (row.size() < size_t(n)) row.resize(size_t(n));
  for (int64_t i = 0; i < m; ++i) {
    float* acc = row.data();
    for (int64_t j = 0; j < n; ++j) acc[j] = 0.0f;
    for (int64_t p = 0; p < k; ++p) {
      const float av = a[i * a_row + p * a_col];
      const float* bp = b + p * ldb;
#pragma omp simd
      for (int64_t j = 0; j < n; ++j) acc[j] += av * bp[j];
    }
    float* ci = c + i * ldc;
    if (accumulate) {
#pragma omp simd
      for (int64_t j = 0; j < n; ++j) ci[j] += alpha * acc[j];
    } else {
#pragma omp simd
      for (int64_t j = 0; j < n; ++j) ci[j] = alpha * acc[j];
    }
  }
}

bool HaveAvx512F() {
#if GANTRY_SMALL_GEMM_AVX512
  static const bool have = __builtin_cpu_supports("avx512f");
  return have;
#else
  return false;
#endif
}

void SmallGemm(int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t a_row,
               int64_t a_col, const float* b, int64_t ldb, float* c, int64_t ldc,
               bool accumulate) {
  if (m <= 0 || n <= 0) return;
#if GANTRY_SMALL_GEMM_AVX512
  if (HaveAvx512F()) {
    SmallGemmAvx512(m, n, k, alpha, a, a_row, a_col, b, ldb, c, ldc, accumulate);
    return;
  }
#endif
  SmallGemmPortable(m, n, k, alpha, a, a_row, a_col, b, ldb, c, ldc, accumulate);
}

void TransposeInto(const float* src, int64_t rows, int64_t cols, int64_t ld_src, float* dst,
                   int64_t ld_dst) {
  constexpr int64_t kBlock = 16;  // 16 source rows: each dst row segment is one cache line
  for (int64_t j0 = 0; j0 < rows; j0 += kBlock) {
    const int64_t j1 = std::min(rows, j0 + kBlock);
    for (int64_t p = 0; p < cols; ++p) {
      float* d = dst + p * ld_dst;
      for (int64_t j = j0; j < j1; ++j) d[j] = src[j * ld_src + p];
    }
  }
}

}  // namespace gantry::kernels::cpu
