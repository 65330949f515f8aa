// Losses: forward vs double references, backward vs finite differences (with scale),
// out-of-range targets named by row.
#include "kernels/loss.h"

#include <gtest/gtest.h>

#include <cmath>

#include "kernels/runtime.h"
#include "tests/unit/kernels/test_util.h"

namespace gantry::kernels {
namespace {

using testing::ExpectGradient;
using testing::MustEmpty;
using testing::Random;
using testing::RandomTokens;

TEST(CrossEntropyTest, ForwardMatchesLogSumExp) {
  const int64_t rows = 7, v = 33;
  Tensor logits = Random({rows, v}, 1, -8.0f, 8.0f), targets = RandomTokens({rows}, v, 2);
  logits.f32()[5] = 120.0f;  // large logit: must not overflow
  Tensor probs = MustEmpty({rows, v}), loss = MustEmpty({1});
  ASSERT_OK(CrossEntropyForward(logits, targets, probs, loss));
  double total = 0.0;
  for (int64_t r = 0; r < rows; ++r) {
    const float* x = logits.f32() + r * v;
    double mx = -1e300, sum = 0.0;
    for (int64_t j = 0; j < v; ++j) mx = std::max(mx, double(x[j]));
    for (int64_t j = 0; j < v; ++j) sum += std::exp(double(x[j]) - mx);
    total += std::log(sum) + mx - x[targets.i32()[r]];
    for (int64_t j = 0; j < v; ++j) {
      const double p = std::exp(double(x[j]) - mx) / sum;
      ASSERT_NEAR(probs.f32()[r * v + j], p, 1e-7 + 3e-6 * p);
    }
  }
  EXPECT_NEAR(loss.f32()[0], total / rows, 1e-5 * total / rows);
}

TEST(CrossEntropyTest, BackwardMatchesFiniteDifferences) {
  const int64_t rows = 6, v = 10;
  const float scale = 0.5f;
  Tensor logits = Random({2, 3, v}, 3, -2.0f, 2.0f), targets = RandomTokens({2, 3}, v, 4);
  Tensor probs = MustEmpty({2, 3, v}), loss = MustEmpty({1}), dlogits = MustEmpty({2, 3, v});
  ASSERT_OK(CrossEntropyForward(logits, targets, probs, loss));
  ASSERT_OK(CrossEntropyBackward(probs, targets, scale, dlogits));
  ExpectGradient("cross-entropy dlogits", logits, dlogits, [&] {
    EXPECT_TRUE(CrossEntropyForward(logits, targets, probs, loss).ok());
    return double(scale) * loss.f32()[0];
  }, 1e-2f, 1e-2, 60);
  ASSERT_OK(CrossEntropyForward(logits, targets, probs, loss));
  ASSERT_OK(CrossEntropyBackward(probs, targets, scale, probs));  // may alias probs
  EXPECT_LT(testing::RelError(probs, dlogits), 1e-7);
  (void)rows;
}

// A mean over no rows is refused (CPU 0/0 = NaN and CUDA 0 used to disagree).
TEST(CrossEntropyTest, NoRowsIsAnError) {
  Tensor logits = MustEmpty({0, 5}), targets = RandomTokens({0}, 5, 1);
  Tensor probs = MustEmpty({0, 5}), loss = MustEmpty({1});
  Status st = CrossEntropyForward(logits, targets, probs, loss);
  EXPECT_NE(st.message().find("no rows"), std::string::npos) << st.message();
  st = HingeForward(logits, targets, loss);
  EXPECT_NE(st.message().find("no rows"), std::string::npos) << st.message();
}

TEST(CrossEntropyTest, OutOfRangeTargetNamesRow) {
  Tensor logits = Random({4, 5}, 5), targets = RandomTokens({4}, 5, 6);
  targets.i32()[2] = 5;
  Tensor probs = MustEmpty({4, 5}), loss = MustEmpty({1});
  Status st = CrossEntropyForward(logits, targets, probs, loss);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("row 2"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("target 5"), std::string::npos) << st.message();
  Tensor short_targets = RandomTokens({3}, 5, 7);
  st = CrossEntropyForward(logits, short_targets, probs, loss);
  EXPECT_NE(st.message().find("'targets'"), std::string::npos) << st.message();
}

TEST(CrossEntropyTest, ParallelPathMatchesSerial) {
  const int saved = NumThreads();
  Tensor logits = Random({256, 1024}, 8, -4.0f, 4.0f), targets = RandomTokens({256}, 1024, 9);
  Tensor probs[2], loss[2];
  for (int t = 0; t < 2; ++t) {
    SetNumThreads(t + 1);
    probs[t] = MustEmpty({256, 1024});
    loss[t] = MustEmpty({1});
    ASSERT_OK(CrossEntropyForward(logits, targets, probs[t], loss[t]));
  }
  SetNumThreads(saved);
  EXPECT_EQ(testing::RelError(probs[1], probs[0]), 0.0);
  EXPECT_NEAR(loss[1].f32()[0], loss[0].f32()[0], 1e-6);
}

TEST(MseTest, ForwardAndBackward) {
  Tensor pred = Random({5, 4}, 10), target = Random({5, 4}, 11);
  Tensor loss = MustEmpty({1}), dpred = MustEmpty({5, 4});
  ASSERT_OK(MseForward(pred, target, loss));
  double ref = 0.0;
  for (int64_t i = 0; i < 20; ++i) ref += std::pow(double(pred.f32()[i]) - target.f32()[i], 2);
  EXPECT_NEAR(loss.f32()[0], ref / 20.0, 1e-6);
  ASSERT_OK(MseBackward(pred, target, 2.0f, dpred));
  ExpectGradient("mse dpred", pred, dpred, [&] {
    EXPECT_TRUE(MseForward(pred, target, loss).ok());
    return 2.0 * loss.f32()[0];
  });
  Tensor wrong = MustEmpty({4, 5});
  EXPECT_NE(MseForward(pred, wrong, loss).message().find("'target'"), std::string::npos);
}

TEST(HingeTest, ForwardMatchesMultiMarginFormula) {
  const int64_t rows = 6, c = 5;
  Tensor scores = Random({rows, c}, 12, -2.0f, 2.0f), targets = RandomTokens({rows}, c, 13);
  Tensor loss = MustEmpty({1});
  ASSERT_OK(HingeForward(scores, targets, loss));
  double total = 0.0;
  for (int64_t r = 0; r < rows; ++r) {
    const float* x = scores.f32() + r * c;
    const int y = targets.i32()[r];
    double row = 0.0;
    for (int64_t j = 0; j < c; ++j) {
      if (j != y) row += std::max(0.0, 1.0 - x[y] + x[j]);
    }
    total += row / c;
  }
  EXPECT_NEAR(loss.f32()[0], total / rows, 1e-6);
}

TEST(HingeTest, BackwardMatchesFiniteDifferences) {
  const int64_t rows = 8, c = 6;
  Tensor scores = Random({rows, c}, 14, -1.5f, 1.5f), targets = RandomTokens({rows}, c, 15);
  for (int64_t r = 0; r < rows; ++r) {  // keep every margin away from its kink at 0
    float* x = scores.f32() + r * c;
    for (int64_t j = 0; j < c; ++j) {
      const float m = 1.0f - x[targets.i32()[r]] + x[j];
      if (j != targets.i32()[r] && std::abs(m) < 0.02f) x[j] += 0.1f;
    }
  }
  Tensor loss = MustEmpty({1}), dscores = MustEmpty({rows, c});
  ASSERT_OK(HingeBackward(scores, targets, 3.0f, dscores));
  ExpectGradient("hinge dscores", scores, dscores, [&] {
    EXPECT_TRUE(HingeForward(scores, targets, loss).ok());
    return 3.0 * loss.f32()[0];
  }, 1e-3f, 1e-2);
  targets.i32()[7] = -2;
  Status st = HingeBackward(scores, targets, 1.0f, dscores);
  EXPECT_NE(st.message().find("row 7"), std::string::npos) << st.message();
}

}  // namespace
}  // namespace gantry::kernels
