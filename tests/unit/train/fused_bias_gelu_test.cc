// gpt's fused c_fc ops (kernels::BiasActivationForward / ActivationBiasBackward) give the same
// bits as the separate bias add, activation and bias-gradient ops, and reject bad shapes.
#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "kernels/activation.h"
#include "kernels/linear.h"
#include "train/rng.h"

namespace gantry::kernels {
namespace {

Tensor Filled(const Shape& shape, uint64_t seed) {
  Tensor t = Tensor::Empty(shape, DType::kF32, Device::Cpu()).value();
  train::Rng rng(seed);
  for (int64_t i = 0; i < t.numel(); ++i) t.f32()[i] = rng.Normal();
  return t;
}

Tensor Copy(const Tensor& t) {
  Tensor c = Tensor::Empty(t.shape(), DType::kF32, Device::Cpu()).value();
  std::memcpy(c.raw(), t.raw(), t.numel() * 4);
  return c;
}

bool SameBytes(const Tensor& a, const Tensor& b) {
  return std::memcmp(a.raw(), b.raw(), a.numel() * 4) == 0;
}

class FusedBiasActivationTest : public ::testing::TestWithParam<Activation> {};

TEST_P(FusedBiasActivationTest, SameBitsAsSeparateOps) {
  const Activation act = GetParam();
  for (int64_t cols : {1024, 300, 7}) {  // full column blocks, a partial one, a tiny row
    const int64_t rows = 37;
    Tensor z1 = Filled({rows, cols}, 1), b = Filled({cols}, 2), dy = Filled({rows, cols}, 3);
    Tensor z2 = Copy(z1), y1 = Copy(z1), y2 = Copy(z1);
    ASSERT_TRUE(BiasAddForward(z1, b).ok() && ActivationForward(act, z1, y1).ok());
    ASSERT_TRUE(BiasActivationForward(act, z2, b, y2).ok());
    EXPECT_TRUE(SameBytes(z1, z2)) << cols;
    EXPECT_TRUE(SameBytes(y1, y2)) << cols;
    Tensor db1 = Filled({cols}, 4), db2 = Copy(db1), dx1 = Copy(dy), dx2 = Copy(dy);
    ASSERT_TRUE(ActivationBackward(act, z1, y1, dx1, dx1).ok() && BiasAddBackward(dx1, db1).ok());
    ASSERT_TRUE(ActivationBiasBackward(act, z2, y2, dx2, dx2, db2).ok());  // in place, as gpt
    EXPECT_TRUE(SameBytes(dx1, dx2)) << cols;
    EXPECT_TRUE(SameBytes(db1, db2)) << cols;
    EXPECT_FALSE(SameBytes(db2, Filled({cols}, 4)));  // the bias gradient really accumulated
  }
}

INSTANTIATE_TEST_SUITE_P(Activations, FusedBiasActivationTest,
                         ::testing::Values(Activation::kGelu, Activation::kRelu,
                                           Activation::kTanh));

TEST(FusedBiasActivationErrors, ShapesAndAliasing) {
  Tensor z = Filled({4, 8}, 1), b = Filled({8}, 2), bad_b = Filled({5}, 3), y = Filled({4, 8}, 4);
  Status st = BiasActivationForward(Activation::kGelu, z, bad_b, y);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("'b'"), std::string::npos) << st.message();
  st = BiasActivationForward(Activation::kGelu, z, b, z);
  EXPECT_NE(st.message().find("alias"), std::string::npos) << st.message();
  st = ActivationBiasBackward(Activation::kGelu, z, y, y, y, bad_b);
  EXPECT_NE(st.message().find("'db'"), std::string::npos) << st.message();
}

}  // namespace
}  // namespace gantry::kernels
