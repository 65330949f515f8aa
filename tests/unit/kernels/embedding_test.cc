// Token + position embedding: exact forward, exact scatter-add backward, range errors.
#include "kernels/embedding.h"

#include <gtest/gtest.h>

#include "tests/unit/kernels/test_util.h"

namespace gantry::kernels {
namespace {

using testing::Clone;
using testing::Dot;
using testing::ExpectGradient;
using testing::MustEmpty;
using testing::Random;
using testing::RandomTokens;

TEST(EmbeddingTest, ForwardAddsTokenAndPosition) {
  const int64_t b = 3, t = 4, v = 11, c = 6;
  Tensor tokens = RandomTokens({b, t}, v, 1);
  Tensor wte = Random({v, c}, 2), wpe = Random({7, c}, 3), out = MustEmpty({b, t, c});
  ASSERT_OK(EmbeddingForward(tokens, wte, &wpe, out));
  for (int64_t i = 0; i < b * t; ++i) {
    for (int64_t j = 0; j < c; ++j) {
      ASSERT_EQ(out.f32()[i * c + j],
                wte.f32()[tokens.i32()[i] * c + j] + wpe.f32()[(i % t) * c + j]);
    }
  }
  ASSERT_OK(EmbeddingForward(tokens, wte, nullptr, out));
  EXPECT_EQ(out.f32()[c + 2], wte.f32()[tokens.i32()[1] * c + 2]);
}

TEST(EmbeddingTest, BackwardMatchesFiniteDifferencesWithRepeatedTokens) {
  const int64_t b = 2, t = 5, v = 4, c = 3;  // 10 tokens over 4 ids: repeats guaranteed
  Tensor tokens = RandomTokens({b, t}, v, 4);
  Tensor wte = Random({v, c}, 5), wpe = Random({t, c}, 6), out = MustEmpty({b, t, c});
  Tensor dout = Random({b, t, c}, 7), dwte = MustEmpty({v, c}), dwpe = MustEmpty({t, c});
  ASSERT_OK(EmbeddingBackward(tokens, dout, dwte, &dwpe));
  auto objective = [&] {
    EXPECT_TRUE(EmbeddingForward(tokens, wte, &wpe, out).ok());
    return Dot(out, dout);
  };
  ExpectGradient("dwte", wte, dwte, objective);
  ExpectGradient("dwpe", wpe, dwpe, objective);
  Tensor dwte1 = Clone(dwte);
  ASSERT_OK(EmbeddingBackward(tokens, dout, dwte, nullptr));  // accumulates
  for (int64_t i = 0; i < v * c; ++i) EXPECT_FLOAT_EQ(dwte.f32()[i], 2.0f * dwte1.f32()[i]);
}

TEST(EmbeddingTest, OutOfRangeTokenNamesPosition) {
  Tensor tokens = RandomTokens({2, 3}, 5, 8);
  tokens.i32()[4] = 5;  // b=1, t=1
  Tensor wte = Random({5, 2}, 9), out = Random({2, 3, 2}, 10), before = Clone(out);
  Status st = EmbeddingForward(tokens, wte, nullptr, out);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("b=1, t=1"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("token 5"), std::string::npos) << st.message();
  EXPECT_EQ(testing::RelError(out, before), 0.0);  // nothing written
  tokens.i32()[4] = -1;
  Tensor dout = Random({2, 3, 2}, 11), dwte = MustEmpty({5, 2});
  st = EmbeddingBackward(tokens, dout, dwte, nullptr);
  EXPECT_NE(st.message().find("token -1"), std::string::npos) << st.message();
}

TEST(EmbeddingTest, ShapeErrors) {
  Tensor tokens = RandomTokens({2, 8}, 5, 1), wte = Random({5, 4}, 2);
  Tensor short_wpe = Random({6, 4}, 3), out = MustEmpty({2, 8, 4});
  Status st = EmbeddingForward(tokens, wte, &short_wpe, out);
  EXPECT_NE(st.message().find("'wpe'"), std::string::npos) << st.message();
  Tensor float_tokens = MustEmpty({2, 8});
  st = EmbeddingForward(float_tokens, wte, nullptr, out);
  EXPECT_NE(st.message().find("'tokens'"), std::string::npos) << st.message();
}

}  // namespace
}  // namespace gantry::kernels
