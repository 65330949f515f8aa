// SmallGemm (kernels/cpu/small_gemm.h) and the causal softmax row kernels
// (kernels/cpu/attention_rows.h) against double-precision references, on the shapes that
// exercise every tile: row counts off the 6-row tile, column counts off the 16-lane vector and
// the 64-column panel, transposed A, accumulation, k = 0, and strided operands.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <tuple>
#include <vector>

#include "kernels/cpu/attention_rows.h"
#include "kernels/cpu/small_gemm.h"
#include "kernels/cpu/vec_math.h"

namespace gantry::kernels::cpu {
namespace {

std::vector<float> RandomVector(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

struct GemmCase {
  int64_t m, n, k;
  bool trans_a, accumulate;
};

// Both paths run on every machine: the dispatching entry point (AVX-512 where the CPU has
// it) and the portable loop.
class SmallGemmTest : public ::testing::TestWithParam<std::tuple<GemmCase, bool>> {};

TEST_P(SmallGemmTest, MatchesDoubleReference) {
  const auto [c, portable] = GetParam();
  // Leading dimensions wider than the operands, as attention's per-head slices are.
  const int64_t lda = (c.trans_a ? c.m : c.k) + 5, ldb = c.n + 7, ldc = c.n + 3;
  const int64_t a_rows = c.trans_a ? c.k : c.m;
  const std::vector<float> a = RandomVector(size_t(std::max<int64_t>(1, a_rows * lda)), 1);
  const std::vector<float> b = RandomVector(size_t(std::max<int64_t>(1, c.k * ldb)), 2);
  std::vector<float> out = RandomVector(size_t(c.m * ldc), 3);
  const std::vector<float> before = out;
  const float alpha = 0.75f;
  const int64_t a_row = c.trans_a ? 1 : lda, a_col = c.trans_a ? lda : 1;
  (portable ? SmallGemmPortable : SmallGemm)(c.m, c.n, c.k, alpha, a.data(), a_row, a_col,
                                            b.data(), ldb, out.data(), ldc, c.accumulate);
  for (int64_t i = 0; i < c.m; ++i) {
    for (int64_t j = 0; j < ldc; ++j) {
      const float got = out[i * ldc + j];
      if (j >= c.n) {  // the padding between rows is never written
        ASSERT_EQ(got, before[i * ldc + j]) << "wrote past column " << c.n << " in row " << i;
        continue;
      }
      double ref = 0.0;
      for (int64_t p = 0; p < c.k; ++p) {
        ref += double(a[i * a_row + p * a_col]) * double(b[p * ldb + j]);
      }
      ref *= alpha;
      if (c.accumulate) ref += before[i * ldc + j];
      ASSERT_NEAR(got, ref, 1e-5 * (1.0 + std::sqrt(double(c.k))))
          << "C[" << i << ", " << j << "] of " << c.m << "x" << c.n << "x" << c.k;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, SmallGemmTest,
    ::testing::Combine(
        ::testing::Values(GemmCase{6, 64, 64, false, false}, GemmCase{1, 1, 1, false, false},
                          GemmCase{7, 17, 5, false, false}, GemmCase{13, 130, 64, false, false},
                          GemmCase{32, 64, 128, true, false}, GemmCase{5, 47, 33, true, false},
                          GemmCase{128, 64, 32, true, true}, GemmCase{11, 80, 9, false, true},
                          GemmCase{4, 16, 0, false, false}, GemmCase{4, 16, 0, true, true}),
        ::testing::Bool()),
    [](const ::testing::TestParamInfo<std::tuple<GemmCase, bool>>& info) {
      const GemmCase& c = std::get<0>(info.param);
      const bool portable = std::get<1>(info.param);
      return std::to_string(c.m) + "x" + std::to_string(c.n) + "x" + std::to_string(c.k) +
             (c.trans_a ? "_At" : "") + (c.accumulate ? "_acc" : "") +
             (portable ? "_portable" : "");
    });

TEST(TransposeIntoTest, SwapsRowsAndColumns) {
  const int64_t rows = 37, cols = 21, ld_src = 29, ld_dst = 40;
  const std::vector<float> src = RandomVector(size_t(rows * ld_src), 4);
  std::vector<float> dst(size_t(cols * ld_dst), -7.0f);
  TransposeInto(src.data(), rows, cols, ld_src, dst.data(), ld_dst);
  for (int64_t p = 0; p < cols; ++p) {
    for (int64_t j = 0; j < ld_dst; ++j) {
      const float want = j < rows ? src[j * ld_src + p] : -7.0f;
      ASSERT_EQ(dst[p * ld_dst + j], want) << "dst[" << p << ", " << j << "]";
    }
  }
}

class CausalSoftmaxRowsTest : public ::testing::TestWithParam<bool> {
 protected:
  void Softmax(float* s, int64_t t, int64_t i0, int64_t i1) const {
    (GetParam() ? CausalSoftmaxRowsPortable : CausalSoftmaxRows)(s, t, i0, i1);
  }
};

TEST_P(CausalSoftmaxRowsTest, RowsSumToOneWithZerosAboveTheDiagonal) {
  const int64_t t = 45;  // rows of 1..45 elements: full vectors and every tail length
  std::vector<float> s = RandomVector(size_t(t * t), 5);
  for (float& x : s) x *= 8.0f;
  const std::vector<float> in = s;
  Softmax(s.data(), t, 3, t);  // rows 0..2 stay as they were
  for (int64_t i = 0; i < 3 * t; ++i) ASSERT_EQ(s[i], in[i]);
  for (int64_t i = 3; i < t; ++i) {
    double mx = -INFINITY, sum = 0.0;
    for (int64_t j = 0; j <= i; ++j) mx = std::max(mx, double(in[i * t + j]));
    for (int64_t j = 0; j <= i; ++j) sum += std::exp(double(in[i * t + j]) - mx);
    for (int64_t j = 0; j < t; ++j) {
      const double want = j <= i ? std::exp(double(in[i * t + j]) - mx) / sum : 0.0;
      ASSERT_NEAR(s[i * t + j], want, 1e-6) << "row " << i << " column " << j;
    }
  }
}

TEST_P(CausalSoftmaxRowsTest, NanStaysNan) {
  const int64_t t = 20;
  std::vector<float> s(size_t(t * t), 0.5f);
  s[19 * t + 4] = NAN;
  Softmax(s.data(), t, 0, t);
  EXPECT_TRUE(std::isnan(s[19 * t + 4]));
  EXPECT_NEAR(s[18 * t + 0], 1.0 / 19.0, 1e-6);
}

INSTANTIATE_TEST_SUITE_P(Paths, CausalSoftmaxRowsTest, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& info) {
                           return info.param ? "portable" : "dispatch";
                         });

class CausalSoftmaxBackwardRowsTest : public ::testing::TestWithParam<bool> {};

TEST_P(CausalSoftmaxBackwardRowsTest, MatchesDoubleReference) {
  const int64_t t = 40, i0 = 17, i1 = 40, ld = t + 3, zero_to = 38;
  std::vector<float> p(size_t(t * t), 0.0f);
  const std::vector<float> r = RandomVector(size_t(t * t), 6);
  for (int64_t i = 0; i < t; ++i) {
    for (int64_t j = 0; j <= i; ++j) p[i * t + j] = 0.5f * (r[i * t + j] + 1.0f);
  }
  std::vector<float> ds = RandomVector(size_t((i1 - i0) * ld), 7);
  const std::vector<float> dp = ds;
  (GetParam() ? CausalSoftmaxBackwardRowsPortable : CausalSoftmaxBackwardRows)(
      p.data(), t, ds.data(), ld, i0, i1, zero_to);
  for (int64_t i = i0; i < i1; ++i) {
    const float* dpr = dp.data() + (i - i0) * ld;
    double dot = 0.0;
    for (int64_t j = 0; j <= i; ++j) dot += double(p[i * t + j]) * double(dpr[j]);
    for (int64_t j = 0; j < ld; ++j) {
      const float got = ds[(i - i0) * ld + j];
      if (j <= i) {
        ASSERT_NEAR(got, double(p[i * t + j]) * (double(dpr[j]) - dot), 1e-5) << i << "," << j;
      } else if (j < zero_to) {
        ASSERT_EQ(got, 0.0f) << "row " << i << " column " << j << " above the diagonal";
      } else {
        ASSERT_EQ(got, dpr[j]) << "row " << i << " column " << j << " past zero_to";
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Paths, CausalSoftmaxBackwardRowsTest, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& info) {
                           return info.param ? "portable" : "dispatch";
                         });

}  // namespace
}  // namespace gantry::kernels::cpu
