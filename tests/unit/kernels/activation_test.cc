// Activations: forward vs libm formulas (incl. saturation), backward vs finite differences.
#include "kernels/activation.h"

#include <gtest/gtest.h>

#include <cmath>

#include "kernels/runtime.h"
#include "tests/unit/kernels/test_util.h"

namespace gantry::kernels {
namespace {

using testing::Clone;
using testing::Dot;
using testing::ExpectGradient;
using testing::MustEmpty;
using testing::Random;

double Reference(Activation act, double x) {
  switch (act) {
    case Activation::kRelu: return x > 0 ? x : 0;
    case Activation::kSigmoid: return 1.0 / (1.0 + std::exp(-x));
    case Activation::kTanh: return std::tanh(x);
    case Activation::kGelu:
      return 0.5 * x * (1.0 + std::tanh(0.7978845608028654 * (x + 0.044715 * x * x * x)));
  }
  return 0;
}

class ActivationTest : public ::testing::TestWithParam<Activation> {};

TEST_P(ActivationTest, ForwardMatchesLibm) {
  const Activation act = GetParam();
  Tensor x = Random({4001}, 1, -12.0f, 12.0f);
  const float edges[] = {0.0f, 1e-6f, -1e-6f, 0.03f, -0.05f, 90.0f, -90.0f, 200.0f, -200.0f};
  for (int k = 0; k < 9; ++k) x.f32()[k * 401] = edges[k];
  Tensor y = MustEmpty({4001});
  ASSERT_OK(ActivationForward(act, x, y));
  for (int64_t i = 0; i < x.numel(); ++i) {
    const double ref = Reference(act, x.f32()[i]);
    // f32 tanh is good to ~1 ulp of 1 (6e-8 absolute); gelu scales that error by |x|/2.
    const double tol = 2e-7 * (1.0 + std::abs(x.f32()[i])) + 2e-6 * std::abs(ref);
    ASSERT_NEAR(y.f32()[i], ref, tol) << ActivationName(act) << " at " << x.f32()[i];
    ASSERT_FALSE(std::isnan(y.f32()[i]));
  }
  // Relative accuracy near zero (tanh-based formulas must not lose it).
  if (act == Activation::kTanh) {
    Tensor s = MustEmpty({1}), t = MustEmpty({1});
    s.f32()[0] = 1e-5f;
    ASSERT_OK(ActivationForward(act, s, t));
    EXPECT_NEAR(t.f32()[0], 1e-5f, 1e-11);
  }
}

TEST_P(ActivationTest, BackwardMatchesFiniteDifferences) {
  const Activation act = GetParam();
  Tensor x = Random({3, 67}, 2, -3.0f, 3.0f);
  for (int64_t i = 0; i < x.numel(); ++i) {  // keep relu away from its kink
    if (std::abs(x.f32()[i]) < 0.05f) x.f32()[i] = 0.5f;
  }
  Tensor y = MustEmpty({3, 67}), dy = Random({3, 67}, 3), dx = MustEmpty({3, 67});
  ASSERT_OK(ActivationForward(act, x, y));
  ASSERT_OK(ActivationBackward(act, x, y, dy, dx));
  ExpectGradient(ActivationName(act), x, dx, [&] {
    EXPECT_TRUE(ActivationForward(act, x, y).ok());
    return Dot(y, dy);
  }, 1e-3f, 5e-3);
  Tensor dy_copy = Clone(dy);  // dx may alias dy
  ASSERT_OK(ActivationBackward(act, x, y, dy_copy, dy_copy));
  EXPECT_LT(testing::RelError(dy_copy, dx), 1e-7);
}

TEST_P(ActivationTest, ParallelPathMatchesSerial) {
  const Activation act = GetParam();
  const int saved = NumThreads();
  Tensor x = Random({1 << 18}, 4, -5.0f, 5.0f), y1 = MustEmpty({1 << 18}), y2 = MustEmpty({1 << 18});
  SetNumThreads(1);
  ASSERT_OK(ActivationForward(act, x, y1));
  SetNumThreads(2);
  ASSERT_OK(ActivationForward(act, x, y2));
  SetNumThreads(saved);
  // Chunk edges move between the vector body and the scalar tail: last-bit differences only.
  EXPECT_LT(testing::RelError(y1, y2), 1e-6);
}

INSTANTIATE_TEST_SUITE_P(All, ActivationTest,
                         ::testing::Values(Activation::kRelu, Activation::kSigmoid,
                                           Activation::kTanh, Activation::kGelu),
                         [](const auto& info) { return ActivationName(info.param); });

TEST(ActivationParseTest, NamesRoundTrip) {
  for (const char* name : {"relu", "sigmoid", "tanh", "gelu"}) {
    auto act = ParseActivation(name);
    ASSERT_TRUE(act.ok());
    EXPECT_STREQ(ActivationName(*act), name);
  }
  auto bad = ParseActivation("swish");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("swish"), std::string::npos);
}

TEST(ActivationErrorTest, ShapeMismatchNamesTensor) {
  Tensor x = MustEmpty({4}), y = MustEmpty({5});
  Status st = ActivationForward(Activation::kRelu, x, y);
  EXPECT_NE(st.message().find("ActivationForward"), std::string::npos);
  EXPECT_NE(st.message().find("'y'"), std::string::npos);
}

}  // namespace
}  // namespace gantry::kernels
