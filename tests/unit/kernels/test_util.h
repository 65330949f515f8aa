// Helpers shared by the kernels unit tests: seeded random tensors, a double-precision GEMM
// reference, and a central-difference gradient checker.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <random>
#include <vector>

#include "kernels/tensor.h"

namespace gantry::kernels::testing {

#define ASSERT_OK(expr)                                  \
  do {                                                   \
    const ::gantry::Status st_ = (expr);                 \
    ASSERT_TRUE(st_.ok()) << st_.ToString();             \
  } while (0)

inline Tensor MustEmpty(const Shape& shape, DType dtype = DType::kF32) {
  auto t = Tensor::Empty(shape, dtype);
  EXPECT_TRUE(t.ok()) << t.status().ToString();
  return t.ok() ? *t : Tensor();
}

inline Tensor Random(const Shape& shape, uint32_t seed, float lo = -1.0f, float hi = 1.0f) {
  Tensor t = MustEmpty(shape);
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  for (int64_t i = 0; i < t.numel(); ++i) t.f32()[i] = dist(rng);
  return t;
}

inline Tensor RandomTokens(const Shape& shape, int32_t vocab, uint32_t seed) {
  Tensor t = MustEmpty(shape, DType::kI32);
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int32_t> dist(0, vocab - 1);
  for (int64_t i = 0; i < t.numel(); ++i) t.i32()[i] = dist(rng);
  return t;
}

inline Tensor Clone(const Tensor& t) {
  Tensor c = MustEmpty(t.shape(), t.dtype());
  std::copy_n(static_cast<const char*>(t.raw()), t.nbytes(), static_cast<char*>(c.raw()));
  return c;
}

// sum_i a[i] * w[i] in double: the scalar objective whose gradient w.r.t. a is w.
inline double Dot(const Tensor& a, const Tensor& w) {
  double s = 0.0;
  for (int64_t i = 0; i < a.numel(); ++i) s += double(a.f32()[i]) * double(w.f32()[i]);
  return s;
}

// max |a - b| / max(max |b|, floor): a size-independent relative error.
inline double RelError(const Tensor& a, const Tensor& b, double floor = 1e-6) {
  double diff = 0.0, mag = floor;
  for (int64_t i = 0; i < a.numel(); ++i) {
    diff = std::max(diff, std::abs(double(a.f32()[i]) - double(b.f32()[i])));
    mag = std::max(mag, std::abs(double(b.f32()[i])));
  }
  return diff / mag;
}

// Row-major reference: C = alpha * op(A) op(B) + beta * C, in double.
inline void ReferenceGemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha,
                          const float* a, int64_t lda, const float* b, int64_t ldb, float beta,
                          float* c, int64_t ldc) {
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      double s = 0.0;
      for (int64_t p = 0; p < k; ++p) {
        double av = ta ? a[p * lda + i] : a[i * lda + p];
        double bv = tb ? b[j * ldb + p] : b[p * ldb + j];
        s += av * bv;
      }
      double prev = beta == 0.0f ? 0.0 : double(beta) * c[i * ldc + j];
      c[i * ldc + j] = static_cast<float>(double(alpha) * s + prev);
    }
  }
}

// Compares `analytic` (d objective / d x) with central differences of `objective` (which
// re-runs the forward pass reading x) at up to `max_checks` evenly spread elements of x.
// Fails when max |analytic - numeric| / max |numeric| exceeds `tol`.
inline void ExpectGradient(const char* what, Tensor x, const Tensor& analytic,
                           const std::function<double()>& objective, float eps = 1e-2f,
                           double tol = 1e-2, int64_t max_checks = 96) {
  ASSERT_EQ(x.numel(), analytic.numel()) << what;
  const int64_t n = x.numel();
  const int64_t step = std::max<int64_t>(1, n / max_checks);
  double diff = 0.0, mag = 1e-4;
  for (int64_t i = 0; i < n; i += step) {
    const float orig = x.f32()[i];
    x.f32()[i] = orig + eps;
    const double up = objective();
    x.f32()[i] = orig - eps;
    const double down = objective();
    x.f32()[i] = orig;
    const double numeric = (up - down) / (2.0 * double(eps));
    diff = std::max(diff, std::abs(numeric - double(analytic.f32()[i])));
    mag = std::max(mag, std::abs(numeric));
  }
  objective();  // leave the forward outputs consistent with the unperturbed x
  EXPECT_LT(diff / mag, tol) << what << ": max abs diff " << diff << ", max |grad| " << mag;
}

}  // namespace gantry::kernels::testing
