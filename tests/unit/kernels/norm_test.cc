// Softmax and LayerNorm: forward vs double reference loops, backward vs finite differences.
#include "kernels/norm.h"

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
using testing::RelError;

TEST(SoftmaxTest, ForwardMatchesReferenceAndIsStable) {
  Tensor x = Random({5, 37}, 1, -20.0f, 20.0f);
  x.f32()[3] = 1000.0f;  // would overflow without the max subtraction
  Tensor y = MustEmpty({5, 37});
  ASSERT_OK(SoftmaxForward(x, y));
  for (int64_t r = 0; r < 5; ++r) {
    double mx = -1e300, sum = 0.0;
    for (int64_t j = 0; j < 37; ++j) mx = std::max(mx, double(x.f32()[r * 37 + j]));
    for (int64_t j = 0; j < 37; ++j) sum += std::exp(double(x.f32()[r * 37 + j]) - mx);
    for (int64_t j = 0; j < 37; ++j) {
      const double ref = std::exp(double(x.f32()[r * 37 + j]) - mx) / sum;
      ASSERT_NEAR(y.f32()[r * 37 + j], ref, 1e-7 + 3e-6 * ref);
    }
  }
  EXPECT_NEAR(y.f32()[3], 1.0f, 1e-6);
}

TEST(SoftmaxTest, BackwardMatchesFiniteDifferences) {
  Tensor x = Random({4, 23}, 2, -2.0f, 2.0f), y = MustEmpty({4, 23});
  Tensor dy = Random({4, 23}, 3), dx = MustEmpty({4, 23});
  ASSERT_OK(SoftmaxForward(x, y));
  ASSERT_OK(SoftmaxBackward(y, dy, dx));
  ExpectGradient("softmax dx", x, dx, [&] {
    EXPECT_TRUE(SoftmaxForward(x, y).ok());
    return Dot(y, dy);
  }, 1e-3f);
}

TEST(LayerNormTest, ForwardMatchesReference) {
  const int64_t rows = 6, c = 50;
  Tensor x = Random({2, 3, c}, 4, -3.0f, 5.0f), g = Random({c}, 5), b = Random({c}, 6);
  Tensor y = MustEmpty({2, 3, c}), mean = MustEmpty({2, 3}), rstd = MustEmpty({rows});
  ASSERT_OK(LayerNormForward(x, g, b, 1e-5f, y, mean, rstd));
  for (int64_t r = 0; r < rows; ++r) {
    double mu = 0, var = 0;
    for (int64_t j = 0; j < c; ++j) mu += x.f32()[r * c + j];
    mu /= c;
    for (int64_t j = 0; j < c; ++j) var += std::pow(x.f32()[r * c + j] - mu, 2);
    const double rs = 1.0 / std::sqrt(var / c + 1e-5);
    EXPECT_NEAR(mean.f32()[r], mu, 1e-6);
    EXPECT_NEAR(rstd.f32()[r], rs, 1e-5 * rs);
    for (int64_t j = 0; j < c; ++j) {
      const double ref = (x.f32()[r * c + j] - mu) * rs * g.f32()[j] + b.f32()[j];
      ASSERT_NEAR(y.f32()[r * c + j], ref, 1e-5);
    }
  }
}

TEST(LayerNormTest, BackwardMatchesFiniteDifferencesAndAccumulates) {
  const int64_t c = 24;
  Tensor x = Random({5, c}, 7, -2.0f, 2.0f), g = Random({c}, 8), b = Random({c}, 9);
  Tensor y = MustEmpty({5, c}), mean = MustEmpty({5}), rstd = MustEmpty({5});
  Tensor dy = Random({5, c}, 10), dx = Random({5, c}, 11);
  Tensor dg = MustEmpty({c}), db = MustEmpty({c});
  ASSERT_OK(LayerNormForward(x, g, b, 1e-5f, y, mean, rstd));
  ASSERT_OK(LayerNormBackward(x, g, mean, rstd, dy, dx, dg, db));
  auto objective = [&] {
    EXPECT_TRUE(LayerNormForward(x, g, b, 1e-5f, y, mean, rstd).ok());
    return Dot(y, dy);
  };
  ExpectGradient("layernorm dx", x, dx, objective, 1e-2f, 2e-2);
  ExpectGradient("layernorm dgamma", g, dg, objective);
  ExpectGradient("layernorm dbeta", b, db, objective);
  Tensor db1 = Clone(db);
  ASSERT_OK(LayerNormBackward(x, g, mean, rstd, dy, dx, dg, db));
  for (int64_t j = 0; j < c; ++j) EXPECT_FLOAT_EQ(db.f32()[j], 2.0f * db1.f32()[j]);
}

TEST(LayerNormTest, ParallelPathMatchesSerial) {
  const int saved = NumThreads();
  const int64_t rows = 2048, c = 256;
  Tensor x = Random({rows, c}, 1), g = Random({c}, 2), b = Random({c}, 3), dy = Random({rows, c}, 4);
  Tensor y[2], dx[2], dg[2], db[2];
  Tensor mean = MustEmpty({rows}), rstd = MustEmpty({rows});
  for (int t = 0; t < 2; ++t) {
    SetNumThreads(t + 1);
    y[t] = MustEmpty({rows, c});
    dx[t] = MustEmpty({rows, c});
    dg[t] = MustEmpty({c});
    db[t] = MustEmpty({c});
    ASSERT_OK(LayerNormForward(x, g, b, 1e-5f, y[t], mean, rstd));
    ASSERT_OK(LayerNormBackward(x, g, mean, rstd, dy, dx[t], dg[t], db[t]));
  }
  SetNumThreads(saved);
  EXPECT_EQ(RelError(y[1], y[0]), 0.0);
  EXPECT_EQ(RelError(dx[1], dx[0]), 0.0);
  EXPECT_LT(RelError(dg[1], dg[0]), 1e-5);  // partial sums merge in another order
  EXPECT_LT(RelError(db[1], db[0]), 1e-5);
}

TEST(LayerNormTest, ErrorsNameTensor) {
  Tensor x = MustEmpty({4, 8}), g = MustEmpty({7}), b = MustEmpty({8});
  Tensor y = MustEmpty({4, 8}), mean = MustEmpty({4}), rstd = MustEmpty({3});
  Status st = LayerNormForward(x, g, b, 1e-5f, y, mean, rstd);
  EXPECT_NE(st.message().find("'gamma'"), std::string::npos) << st.message();
  Tensor g8 = MustEmpty({8});
  st = LayerNormForward(x, g8, b, 1e-5f, y, mean, rstd);
  EXPECT_NE(st.message().find("'rstd'"), std::string::npos) << st.message();
}

}  // namespace
}  // namespace gantry::kernels
