// Conv2d vs a naive direct convolution, pooling vs reference loops, every backward vs finite
// differences, and argument errors.
#include "kernels/conv.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>
#include <random>

#include "tests/unit/kernels/test_util.h"

namespace gantry::kernels {
namespace {

using testing::Dot;
using testing::ExpectGradient;
using testing::MustEmpty;
using testing::Random;

double NaiveConvAt(const Tensor& x, const Tensor& w, const Tensor* b, const Conv2dOptions& o,
                   int64_t n, int64_t co, int64_t oy, int64_t ox) {
  const int64_t cin = x.dim(1), h = x.dim(2), wd = x.dim(3), kh = w.dim(2), kw = w.dim(3);
  double s = b != nullptr ? b->f32()[co] : 0.0;
  for (int64_t ci = 0; ci < cin; ++ci) {
    for (int64_t i = 0; i < kh; ++i) {
      for (int64_t j = 0; j < kw; ++j) {
        const int64_t iy = oy * o.stride - o.padding + i, ix = ox * o.stride - o.padding + j;
        if (iy < 0 || iy >= h || ix < 0 || ix >= wd) continue;
        s += double(x.f32()[((n * cin + ci) * h + iy) * wd + ix]) *
             double(w.f32()[((co * cin + ci) * kh + i) * kw + j]);
      }
    }
  }
  return s;
}

struct ConvCase {
  Shape x, w;
  Conv2dOptions opts;
};

class ConvTest : public ::testing::TestWithParam<ConvCase> {};

TEST_P(ConvTest, ForwardMatchesDirectConvolution) {
  const ConvCase cc = GetParam();
  Tensor x = Random(cc.x, 1), w = Random(cc.w, 2), b = Random({cc.w[0]}, 3);
  const Shape ys = Conv2dOutputShape(cc.x, cc.w, cc.opts);
  Tensor y = MustEmpty(ys);
  Tensor ws = MustEmpty({std::max<int64_t>(
      1, Conv2dWorkspaceElements(cc.x, cc.w, cc.opts, Device::Cpu()))});
  ASSERT_OK(Conv2dForward(x, w, &b, cc.opts, y, ws));
  int64_t i = 0;
  for (int64_t n = 0; n < ys[0]; ++n)
    for (int64_t co = 0; co < ys[1]; ++co)
      for (int64_t oy = 0; oy < ys[2]; ++oy)
        for (int64_t ox = 0; ox < ys[3]; ++ox, ++i)
          ASSERT_NEAR(y.f32()[i], NaiveConvAt(x, w, &b, cc.opts, n, co, oy, ox), 1e-5);
}

TEST_P(ConvTest, BackwardMatchesFiniteDifferences) {
  const ConvCase cc = GetParam();
  Tensor x = Random(cc.x, 4), w = Random(cc.w, 5), b = Random({cc.w[0]}, 6);
  const Shape ys = Conv2dOutputShape(cc.x, cc.w, cc.opts);
  Tensor y = MustEmpty(ys), dy = Random(ys, 7);
  Tensor ws = MustEmpty({std::max<int64_t>(
      1, Conv2dWorkspaceElements(cc.x, cc.w, cc.opts, Device::Cpu()))});
  Tensor dx = Random(cc.x, 8), dw = MustEmpty(cc.w), db = MustEmpty({cc.w[0]});
  ASSERT_OK(Conv2dBackward(x, w, dy, cc.opts, &dx, dw, &db, ws));
  auto objective = [&] {
    EXPECT_TRUE(Conv2dForward(x, w, &b, cc.opts, y, ws).ok());
    return Dot(y, dy);
  };
  ExpectGradient("conv dx", x, dx, objective);
  ExpectGradient("conv dw", w, dw, objective);
  ExpectGradient("conv db", b, db, objective);
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, ConvTest,
    ::testing::Values(ConvCase{{2, 3, 7, 6}, {4, 3, 3, 3}, {1, 1}},
                      ConvCase{{1, 2, 9, 8}, {3, 2, 3, 2}, {2, 1}},
                      ConvCase{{2, 4, 5, 5}, {3, 4, 1, 1}, {1, 0}},
                      ConvCase{{1, 1, 6, 6}, {2, 1, 5, 5}, {1, 2}}));

TEST(ConvErrorsTest, BadArguments) {
  Tensor x = MustEmpty({1, 3, 5, 5}), w = MustEmpty({2, 4, 3, 3}), y = MustEmpty({1, 2, 3, 3});
  Tensor ws = MustEmpty({1000});
  Status st = Conv2dForward(x, w, nullptr, {}, y, ws);
  EXPECT_NE(st.message().find("input channels"), std::string::npos) << st.message();
  Tensor w3 = MustEmpty({2, 3, 3, 3}), tiny_ws = MustEmpty({5});
  st = Conv2dForward(x, w3, nullptr, {}, y, tiny_ws);
  EXPECT_NE(st.message().find("workspace"), std::string::npos) << st.message();
  Tensor big_w = MustEmpty({2, 3, 7, 7});
  st = Conv2dForward(x, big_w, nullptr, {}, y, ws);
  EXPECT_NE(st.message().find("does not fit"), std::string::npos) << st.message();
  EXPECT_TRUE(Conv2dOutputShape({1, 3}, {2, 3, 3, 3}, {}).empty());
  // Empty batch or channels: refused on every backend (cuDNN has no empty descriptors).
  Tensor none = MustEmpty({0, 3, 5, 5}), y0 = MustEmpty({0, 2, 3, 3});
  st = Conv2dForward(none, w3, nullptr, {}, y0, ws);
  EXPECT_NE(st.message().find("is empty"), std::string::npos) << st.message();
}

// Distinct, well-separated values so the max is unambiguous under finite differences.
Tensor Separated(const Shape& shape, uint32_t seed) {
  Tensor t = MustEmpty(shape);
  std::vector<int> perm(t.numel());
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), std::mt19937(seed));
  for (int64_t i = 0; i < t.numel(); ++i) t.f32()[i] = perm[i] * 0.01f - 1.0f;
  return t;
}

TEST(PoolTest, ForwardMatchesReference) {
  Tensor x = Separated({2, 3, 7, 6}, 1);
  for (PoolKind kind : {PoolKind::kMax, PoolKind::kAvg}) {
    const Pool2dOptions o{kind, 3, 2, 1};
    const Shape ys = Pool2dOutputShape(x.shape(), o);
    ASSERT_EQ(ys, (Shape{2, 3, 4, 3}));
    Tensor y = MustEmpty(ys), idx = MustEmpty(ys, DType::kI32);
    ASSERT_OK(Pool2dForward(x, o, y, &idx));
    int64_t i = 0;
    for (int64_t p = 0; p < 6; ++p) {
      for (int64_t oy = 0; oy < 4; ++oy) {
        for (int64_t ox = 0; ox < 3; ++ox, ++i) {
          double best = -1e30, sum = 0;
          int64_t at = -1;
          for (int64_t iy = oy * 2 - 1; iy < oy * 2 + 2; ++iy) {
            for (int64_t ix = ox * 2 - 1; ix < ox * 2 + 2; ++ix) {
              if (iy < 0 || iy >= 7 || ix < 0 || ix >= 6) continue;
              const float v = x.f32()[p * 42 + iy * 6 + ix];
              sum += v;
              if (v > best) best = v, at = iy * 6 + ix;
            }
          }
          if (kind == PoolKind::kMax) {
            ASSERT_EQ(y.f32()[i], best);
            ASSERT_EQ(idx.i32()[i], at);
          } else {
            ASSERT_NEAR(y.f32()[i], sum / 9.0, 1e-6);  // count_include_pad
          }
        }
      }
    }
  }
}

TEST(PoolTest, BackwardMatchesFiniteDifferences) {
  for (PoolKind kind : {PoolKind::kMax, PoolKind::kAvg}) {
    for (Pool2dOptions o : {Pool2dOptions{kind, 2, 2, 0}, Pool2dOptions{kind, 3, 2, 1}}) {
      Tensor x = Separated({2, 2, 6, 5}, 2);
      const Shape ys = Pool2dOutputShape(x.shape(), o);
      Tensor y = MustEmpty(ys), idx = MustEmpty(ys, DType::kI32), dy = Random(ys, 3);
      Tensor dx = Random(x.shape(), 4);
      ASSERT_OK(Pool2dForward(x, o, y, &idx));
      ASSERT_OK(Pool2dBackward(dy, &idx, o, dx));
      ExpectGradient(kind == PoolKind::kMax ? "maxpool dx" : "avgpool dx", x, dx, [&] {
        EXPECT_TRUE(Pool2dForward(x, o, y, &idx).ok());
        return Dot(y, dy);
      }, 1e-3f, 5e-3, 1000);
    }
  }
}

TEST(PoolTest, Errors) {
  Tensor x = MustEmpty({1, 1, 4, 4}), y = MustEmpty({1, 1, 2, 2});
  Status st = Pool2dForward(x, {PoolKind::kMax, 2, 2, 0}, y, nullptr);
  EXPECT_NE(st.message().find("indices"), std::string::npos) << st.message();
  st = Pool2dForward(x, {PoolKind::kAvg, 2, 2, 2}, y, nullptr);
  EXPECT_NE(st.message().find("padding"), std::string::npos) << st.message();
  Tensor y3 = MustEmpty({1, 1, 3, 3});
  st = Pool2dForward(x, {PoolKind::kAvg, 2, 2, 0}, y3, nullptr);
  EXPECT_NE(st.message().find("'y'"), std::string::npos) << st.message();
}

}  // namespace
}  // namespace gantry::kernels
