// Optimizers vs torch.optim's formulas evaluated by hand (double) over several steps;
// L2 norm and clipping; option errors.
#include "kernels/optim.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "tests/unit/kernels/test_util.h"

namespace gantry::kernels {
namespace {

using testing::Clone;
using testing::MustEmpty;
using testing::Random;

struct SgdCase {
  float momentum, weight_decay;
  bool nesterov;
};

class SgdTest : public ::testing::TestWithParam<SgdCase> {};

TEST_P(SgdTest, MatchesTorchFormulaOverSteps) {
  const SgdCase sc = GetParam();
  const int64_t n = 257;
  Tensor p = Random({n}, 1), buf = MustEmpty({n});
  std::vector<double> ref_p(p.f32(), p.f32() + n), ref_buf(n, 0.0);
  SgdOptions o{.lr = 0.1f, .momentum = sc.momentum, .weight_decay = sc.weight_decay,
               .nesterov = sc.nesterov};
  for (int step = 0; step < 4; ++step) {
    Tensor g = Random({n}, 100 + step);
    ASSERT_OK(SgdUpdate(p, g, sc.momentum > 0 ? &buf : nullptr, o));
    for (int64_t i = 0; i < n; ++i) {
      double d = g.f32()[i] + double(sc.weight_decay) * ref_p[i];
      if (sc.momentum > 0) {
        ref_buf[i] = sc.momentum * ref_buf[i] + d;  // torch's first step: buf = d
        d = sc.nesterov ? d + sc.momentum * ref_buf[i] : ref_buf[i];
      }
      ref_p[i] -= 0.1 * d;
    }
  }
  for (int64_t i = 0; i < n; ++i) ASSERT_NEAR(p.f32()[i], ref_p[i], 1e-5) << i;
}

INSTANTIATE_TEST_SUITE_P(Variants, SgdTest,
                         ::testing::Values(SgdCase{0.0f, 0.0f, false}, SgdCase{0.9f, 0.0f, false},
                                           SgdCase{0.9f, 0.01f, true},
                                           SgdCase{0.5f, 0.1f, false}));

class AdamTest : public ::testing::TestWithParam<bool> {};

TEST_P(AdamTest, MatchesTorchFormulaOverSteps) {
  const bool adamw = GetParam();
  const int64_t n = 300;
  Tensor p = Random({n}, 2), m = MustEmpty({n}), v = MustEmpty({n});
  std::vector<double> rp(p.f32(), p.f32() + n), rm(n, 0.0), rv(n, 0.0);
  const double lr = 1e-2, b1 = 0.9, b2 = 0.999, eps = 1e-8, wd = 0.1;
  for (int64_t step = 1; step <= 6; ++step) {
    Tensor g = Random({n}, 200 + step, -0.1f, 0.1f);
    AdamOptions o{.lr = float(lr), .beta1 = float(b1), .beta2 = float(b2), .eps = float(eps),
                  .weight_decay = float(wd), .decoupled_weight_decay = adamw, .step = step};
    ASSERT_OK(AdamUpdate(p, g, m, v, o));
    for (int64_t i = 0; i < n; ++i) {
      double gi = g.f32()[i];
      if (adamw) {
        rp[i] *= 1.0 - lr * wd;
      } else {
        gi += wd * rp[i];
      }
      rm[i] = b1 * rm[i] + (1 - b1) * gi;
      rv[i] = b2 * rv[i] + (1 - b2) * gi * gi;
      const double denom = std::sqrt(rv[i]) / std::sqrt(1 - std::pow(b2, step)) + eps;
      rp[i] -= lr / (1 - std::pow(b1, step)) * rm[i] / denom;
    }
  }
  for (int64_t i = 0; i < n; ++i) {
    ASSERT_NEAR(p.f32()[i], rp[i], 2e-6) << i;
    ASSERT_NEAR(m.f32()[i], rm[i], 1e-7) << i;
  }
}

INSTANTIATE_TEST_SUITE_P(AdamAndAdamW, AdamTest, ::testing::Bool());

TEST(OptimErrorsTest, BadOptionsAndShapes) {
  Tensor p = MustEmpty({4}), g = MustEmpty({4}), small = MustEmpty({3});
  Status st = SgdUpdate(p, g, nullptr, {.lr = 0.1f, .momentum = 0.9f});
  EXPECT_NE(st.message().find("momentum_buf"), std::string::npos) << st.message();
  st = SgdUpdate(p, small, nullptr, {});
  EXPECT_NE(st.message().find("'grad'"), std::string::npos) << st.message();
  Tensor m = MustEmpty({4}), v = MustEmpty({4});
  st = AdamUpdate(p, g, m, v, {.step = 0});
  EXPECT_NE(st.message().find("step=0"), std::string::npos) << st.message();
  st = AdamUpdate(p, g, m, small, {});
  EXPECT_NE(st.message().find("'v'"), std::string::npos) << st.message();
}

TEST(ClipTest, NormAndClipping) {
  Tensor g = Random({1 << 17}, 3);  // big enough for the parallel reduction
  double ref = 0.0;
  for (int64_t i = 0; i < g.numel(); ++i) ref += double(g.f32()[i]) * g.f32()[i];
  ref = std::sqrt(ref);
  auto norm = L2Norm(g);
  ASSERT_TRUE(norm.ok());
  EXPECT_NEAR(*norm, ref, 1e-6 * ref);
  Tensor before = Clone(g);
  auto clipped = ClipGradNorm(g, 2.0f * float(ref));  // under the limit: unchanged
  ASSERT_TRUE(clipped.ok());
  EXPECT_EQ(testing::RelError(g, before), 0.0);
  clipped = ClipGradNorm(g, 1.0f);
  ASSERT_TRUE(clipped.ok());
  EXPECT_NEAR(*clipped, ref, 1e-6 * ref);
  EXPECT_NEAR(*L2Norm(g), 1.0f, 1e-5);
  const float coef = 1.0f / (float(ref) + 1e-6f);
  EXPECT_FLOAT_EQ(g.f32()[10], before.f32()[10] * coef);
  EXPECT_FALSE(ClipGradNorm(g, 0.0f).ok());
}

}  // namespace
}  // namespace gantry::kernels
