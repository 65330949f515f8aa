// Causal self-attention: forward vs a naive double loop, backward vs finite differences,
// serial vs parallel, and shape errors.
#include "kernels/attention.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "kernels/runtime.h"
#include "tests/unit/kernels/test_util.h"

namespace gantry::kernels {
namespace {

using testing::Dot;
using testing::ExpectGradient;
using testing::MustEmpty;
using testing::Random;
using testing::RelError;

// Naive reference: out [B, T, C] and att [B, H, T, T] in double.
void NaiveAttention(const Tensor& qkv, int heads, std::vector<double>& out,
                    std::vector<double>& att) {
  const int64_t b_n = qkv.dim(0), t_n = qkv.dim(1), c = qkv.dim(2) / 3, d = c / heads;
  out.assign(b_n * t_n * c, 0.0);
  att.assign(b_n * heads * t_n * t_n, 0.0);
  auto at = [&](int64_t b, int64_t t, int64_t part, int64_t h, int64_t i) {
    return double(qkv.f32()[(b * t_n + t) * 3 * c + part * c + h * d + i]);
  };
  for (int64_t b = 0; b < b_n; ++b) {
    for (int64_t h = 0; h < heads; ++h) {
      for (int64_t i = 0; i < t_n; ++i) {
        std::vector<double> s(i + 1);
        double mx = -1e300, sum = 0.0;
        for (int64_t j = 0; j <= i; ++j) {
          double dot = 0.0;
          for (int64_t e = 0; e < d; ++e) dot += at(b, i, 0, h, e) * at(b, j, 1, h, e);
          s[j] = dot / std::sqrt(double(d));
          mx = std::max(mx, s[j]);
        }
        for (int64_t j = 0; j <= i; ++j) sum += (s[j] = std::exp(s[j] - mx));
        for (int64_t j = 0; j <= i; ++j) {
          const double p = s[j] / sum;
          att[((b * heads + h) * t_n + i) * t_n + j] = p;
          for (int64_t e = 0; e < d; ++e) out[(b * t_n + i) * c + h * d + e] += p * at(b, j, 2, h, e);
        }
      }
    }
  }
}

// T values below, at and across the CPU backend's 32-row causal blocks (partial last block).
class AttentionShapeTest : public ::testing::TestWithParam<int64_t> {};

TEST_P(AttentionShapeTest, ForwardMatchesNaive) {
  const int64_t b = 2, t = GetParam(), c = 12;
  const int heads = 3;
  Tensor qkv = Random({b, t, 3 * c}, 1, -2.0f, 2.0f);
  Tensor out = MustEmpty({b, t, c}), att = Random({b, heads, t, t}, 2);
  ASSERT_OK(CausalSelfAttentionForward(qkv, heads, out, att));
  std::vector<double> ref_out, ref_att;
  NaiveAttention(qkv, heads, ref_out, ref_att);
  for (size_t i = 0; i < ref_out.size(); ++i) ASSERT_NEAR(out.f32()[i], ref_out[i], 2e-6);
  for (size_t i = 0; i < ref_att.size(); ++i) ASSERT_NEAR(att.f32()[i], ref_att[i], 1e-6);
}

TEST_P(AttentionShapeTest, BackwardMatchesFiniteDifferences) {
  const int64_t b = 1, t = GetParam(), c = 8;
  const int heads = 2;
  Tensor qkv = Random({b, t, 3 * c}, 3);
  Tensor out = MustEmpty({b, t, c}), att = MustEmpty({b, heads, t, t});
  Tensor dout = Random({b, t, c}, 4), dqkv = Random({b, t, 3 * c}, 5);
  Tensor datt = Random({b, heads, t, t}, 6);
  ASSERT_OK(CausalSelfAttentionForward(qkv, heads, out, att));
  ASSERT_OK(CausalSelfAttentionBackward(qkv, att, dout, heads, dqkv, datt));
  ExpectGradient("attention dqkv", qkv, dqkv, [&] {
    EXPECT_TRUE(CausalSelfAttentionForward(qkv, heads, out, att).ok());
    return Dot(out, dout);
  }, 1e-2f, 1e-2, 240);
}

INSTANTIATE_TEST_SUITE_P(SeqLens, AttentionShapeTest, ::testing::Values(5, 32, 45, 70));

TEST(AttentionTest, ParallelPathMatchesSerial) {
  const int saved = NumThreads();
  const int64_t b = 4, t = 64, c = 128;
  const int heads = 4;
  Tensor qkv = Random({b, t, 3 * c}, 7), dout = Random({b, t, c}, 8);
  Tensor out[2], att[2], dqkv[2];
  Tensor datt = MustEmpty({b, heads, t, t});
  for (int n = 0; n < 2; ++n) {
    SetNumThreads(n + 1);
    out[n] = MustEmpty({b, t, c});
    att[n] = MustEmpty({b, heads, t, t});
    dqkv[n] = MustEmpty({b, t, 3 * c});
    ASSERT_OK(CausalSelfAttentionForward(qkv, heads, out[n], att[n]));
    ASSERT_OK(CausalSelfAttentionBackward(qkv, att[n], dout, heads, dqkv[n], datt));
  }
  SetNumThreads(saved);
  EXPECT_EQ(RelError(out[1], out[0]), 0.0);
  EXPECT_EQ(RelError(att[1], att[0]), 0.0);
  EXPECT_EQ(RelError(dqkv[1], dqkv[0]), 0.0);
}

TEST(AttentionTest, CpuBackwardNeedsNoScoreScratch) {
  const int64_t b = 2, t = 40, c = 16;
  const int heads = 2;
  Tensor qkv = Random({b, t, 3 * c}, 9), dout = Random({b, t, c}, 10);
  Tensor out = MustEmpty({b, t, c}), att = MustEmpty({b, heads, t, t});
  ASSERT_OK(CausalSelfAttentionForward(qkv, heads, out, att));
  Tensor with = MustEmpty({b, t, 3 * c}), without = MustEmpty({b, t, 3 * c});
  Tensor datt = MustEmpty({b, heads, t, t});
  ASSERT_OK(CausalSelfAttentionBackward(qkv, att, dout, heads, with, datt));
  Tensor none;
  ASSERT_OK(CausalSelfAttentionBackward(qkv, att, dout, heads, without, none));
  EXPECT_EQ(RelError(without, with), 0.0);
  // A datt that is given must still have the right shape.
  Tensor bad = MustEmpty({b, heads, t, t + 1});
  const Status st = CausalSelfAttentionBackward(qkv, att, dout, heads, with, bad);
  EXPECT_NE(st.message().find("'datt'"), std::string::npos) << st.message();
}

TEST(AttentionTest, ErrorsNameTensorAndHeads) {
  Tensor qkv = MustEmpty({2, 4, 24}), out = MustEmpty({2, 4, 8}), att = MustEmpty({2, 2, 4, 4});
  Status st = CausalSelfAttentionForward(qkv, 3, out, att);
  EXPECT_NE(st.message().find("heads=3"), std::string::npos) << st.message();
  Tensor bad_qkv = MustEmpty({2, 4, 25});
  st = CausalSelfAttentionForward(bad_qkv, 2, out, att);
  EXPECT_NE(st.message().find("'qkv'"), std::string::npos) << st.message();
  Tensor bad_att = MustEmpty({2, 2, 4, 5});
  st = CausalSelfAttentionForward(qkv, 2, out, bad_att);
  EXPECT_NE(st.message().find("'att'"), std::string::npos) << st.message();
}

}  // namespace
}  // namespace gantry::kernels
