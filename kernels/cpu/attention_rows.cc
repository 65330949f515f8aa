// Causal softmax rows: AVX-512 (masked 16-lane chunks, the vec_math.h FastExp polynomial in
// zmm registers) or the portable loops.
#include "kernels/cpu/attention_rows.h"

#include <cmath>

#include "kernels/cpu/small_gemm.h"
#include "kernels/cpu/vec_math.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define GANTRY_ROWS_AVX512 1
#else
#define GANTRY_ROWS_AVX512 0
#endif

namespace gantry::kernels::cpu {

namespace {

#if GANTRY_ROWS_AVX512
#define GANTRY_AVX512F __attribute__((target("avx512f")))

GANTRY_AVX512F inline __mmask16 TailMask(int64_t left) {
  return left >= 16 ? __mmask16(0xffff) : __mmask16((1u << left) - 1);
}

// FastExp (vec_math.h) on 16 lanes: the same clamp, reduction and polynomial.
GANTRY_AVX512F inline __m512 Exp16(__m512 x) {
  const __m512 limit = _mm512_set1_ps(kExpLimit);
  // min/max return their second operand when either is NaN: NaN stays NaN.
  x = _mm512_max_ps(_mm512_sub_ps(_mm512_setzero_ps(), limit), _mm512_min_ps(limit, x));
  const __m512 magic = _mm512_set1_ps(kExpMagic);
  const __m512 n =
      _mm512_sub_ps(_mm512_fmadd_ps(x, _mm512_set1_ps(kExpLog2e), magic), magic);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(kExpLn2Hi), x);
  r = _mm512_fmadd_ps(n, _mm512_set1_ps(kExpLn2Lo), r);
  const __m512 r2 = _mm512_mul_ps(r, r);
  __m512 q = _mm512_set1_ps(kExpPoly[0]);
  for (int k = 1; k < 6; ++k) q = _mm512_fmadd_ps(q, r, _mm512_set1_ps(kExpPoly[k]));
  q = _mm512_add_ps(_mm512_fmadd_ps(q, r2, r), _mm512_set1_ps(1.0f));
  const __m512i bits = _mm512_slli_epi32(
      _mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23);
  return _mm512_mul_ps(q, _mm512_castsi512_ps(bits));
}

GANTRY_AVX512F void ZeroTail(float* row, int64_t from, int64_t to) {
  for (int64_t j = from; j < to; j += 16) {
    _mm512_mask_storeu_ps(row + j, TailMask(to - j), _mm512_setzero_ps());
  }
}

GANTRY_AVX512F void SoftmaxRowsAvx512(float* s, int64_t t, int64_t i0, int64_t i1) {
  for (int64_t i = i0; i < i1; ++i) {
    float* row = s + i * t;
    const int64_t n = i + 1;
    __m512 vmax = _mm512_set1_ps(-INFINITY);
    for (int64_t j = 0; j < n; j += 16) {
      const __mmask16 m = TailMask(n - j);
      vmax = _mm512_mask_max_ps(vmax, m, vmax, _mm512_maskz_loadu_ps(m, row + j));
    }
    const __m512 mx = _mm512_set1_ps(_mm512_reduce_max_ps(vmax));
    __m512 vsum = _mm512_setzero_ps();
    for (int64_t j = 0; j < n; j += 16) {
      const __mmask16 m = TailMask(n - j);
      const __m512 e = Exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, row + j), mx));
      vsum = _mm512_mask_add_ps(vsum, m, vsum, e);
      _mm512_mask_storeu_ps(row + j, m, e);
    }
    const __m512 inv = _mm512_set1_ps(1.0f / _mm512_reduce_add_ps(vsum));
    for (int64_t j = 0; j < n; j += 16) {
      const __mmask16 m = TailMask(n - j);
      _mm512_mask_storeu_ps(row + j, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, row + j), inv));
    }
    ZeroTail(row, n, t);
  }
}

GANTRY_AVX512F void SoftmaxBackwardRowsAvx512(const float* p, int64_t t, float* ds, int64_t ld,
                                              int64_t i0, int64_t i1, int64_t zero_to) {
  for (int64_t i = i0; i < i1; ++i) {
    const float* pr = p + i * t;
    float* dr = ds + (i - i0) * ld;
    const int64_t n = i + 1;
    __m512 vdot = _mm512_setzero_ps();
    for (int64_t j = 0; j < n; j += 16) {
      const __mmask16 m = TailMask(n - j);
      vdot = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, pr + j), _mm512_maskz_loadu_ps(m, dr + j),
                             vdot);
    }
    const __m512 dot = _mm512_set1_ps(_mm512_reduce_add_ps(vdot));
    for (int64_t j = 0; j < n; j += 16) {
      const __mmask16 m = TailMask(n - j);
      const __m512 d = _mm512_sub_ps(_mm512_maskz_loadu_ps(m, dr + j), dot);
      _mm512_mask_storeu_ps(dr + j, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, pr + j), d));
    }
    ZeroTail(dr, n, zero_to);
  }
}
#endif

}  // namespace

void CausalSoftmaxRowsPortable(float* s, int64_t t, int64_t i0, int64_t i1) {
  for (int64_t i = i0; i < i1; ++i) {
    float* row = s + i * t;
    const int64_t n = i + 1;
    float mx = -INFINITY;
    for (int64_t j = 0; j < n; ++j) mx = row[j] > mx ? row[j] : mx;
    float sum = 0.0f;
    for (int64_t j = 0; j < n; ++j) {
      row[j] = FastExp(row[j] - mx);
      sum += row[j];
    }
    const float inv = 1.0f / sum;
    for (int64_t j = 0; j < n; ++j) row[j] *= inv;
    for (int64_t j = n; j < t; ++j) row[j] = 0.0f;
  }
}

void CausalSoftmaxBackwardRowsPortable(const float* p, int64_t t, float* ds, int64_t ld, int64_t i0,
                                 int64_t i1, int64_t zero_to) {
  for (int64_t i = i0; i < i1; ++i) {
    const float* pr = p + i * t;
    float* dr = ds + (i - i0) * ld;
    const int64_t n = i + 1;
    float dot = 0.0f;
    for (int64_t j = 0; j < n; ++j) dot += pr[j] * dr[j];
    for (int64_t j = 0; j < n; ++j) dr[j] = pr[j] * (dr[j] - dot);
    for (int64_t j = n; j < zero_to; ++j) dr[j] = 0.0f;
  }
}

void CausalSoftmaxRows(float* s, int64_t t, int64_t i0, int64_t i1) {
#if GANTRY_ROWS_AVX512
  if (HaveAvx512F()) return SoftmaxRowsAvx512(s, t, i0, i1);
#endif
  CausalSoftmaxRowsPortable(s, t, i0, i1);
}

void CausalSoftmaxBackwardRows(const float* p, int64_t t, float* ds, int64_t ld, int64_t i0,
                               int64_t i1, int64_t zero_to) {
#if GANTRY_ROWS_AVX512
  if (HaveAvx512F()) return SoftmaxBackwardRowsAvx512(p, t, ds, ld, i0, i1, zero_to);
#endif
  CausalSoftmaxBackwardRowsPortable(p, t, ds, ld, i0, i1, zero_to);
}

}  // namespace gantry::kernels::cpu
