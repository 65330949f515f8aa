// Optimizers vs torch.optim's formulas evaluated by hand (double) over several steps;
// L2 norm and clipping; option errors; a split update gives the same bits as one call.
#include "kernels/optim.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "kernels/cpu/cpu_ops.h"
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

// Updating a buffer in one call or in odd-sized pieces (update in backward, data-parallel
// buckets) must give the same bits: every element takes the same roundings.
class SplitInvarianceTest : public ::testing::TestWithParam<int> {};

void RunSplit(int variant, Tensor& p, Tensor& g, Tensor& s0, Tensor& s1, int64_t begin,
              int64_t end) {
  const int64_t n = end - begin;
  Tensor pv = p.View(begin, {n}), gv = g.View(begin, {n});
  Tensor a = s0.View(begin, {n}), b = s1.View(begin, {n});
  Status st;
  switch (variant) {
    case 0: st = SgdUpdate(pv, gv, nullptr, {.lr = 0.05f, .weight_decay = 0.01f}); break;
    case 1: st = SgdUpdate(pv, gv, &a, {.lr = 0.05f, .momentum = 0.9f, .weight_decay = 0.01f});
      break;
    case 2: st = SgdUpdate(pv, gv, &a, {.lr = 0.05f, .momentum = 0.9f, .nesterov = true}); break;
    default:
      st = AdamUpdate(pv, gv, a, b, {.lr = 3e-3f, .weight_decay = 0.1f,
                                     .decoupled_weight_decay = variant == 4, .step = 3});
  }
  ASSERT_TRUE(st.ok()) << st.ToString();
}

TEST_P(SplitInvarianceTest, PiecesEqualOneCall) {
  const int variant = GetParam();
  const int64_t n = 200003;  // above one thread's share, so the flat call is chunked too
  Tensor p1 = Random({n}, 1, -1.0f, 1.0f), g = Random({n}, 2, -0.5f, 0.5f);
  Tensor a1 = Random({n}, 3, -0.1f, 0.1f), b1 = Random({n}, 4, 0.0f, 0.01f);
  Tensor p0 = Clone(p1), p2 = Clone(p1), a2 = Clone(a1), b2 = Clone(b1);
  for (int rep = 0; rep < 3; ++rep) {
    RunSplit(variant, p1, g, a1, b1, 0, n);
    const int64_t sizes[] = {1, 7, 13, 31, 97, 1001, 4099, 65537};
    int64_t begin = 0;
    for (int k = rep; begin < n; ++k) {
      const int64_t end = std::min(n, begin + sizes[k % 8]);
      RunSplit(variant, p2, g, a2, b2, begin, end);
      begin = end;
    }
  }
  EXPECT_EQ(std::memcmp(p1.f32(), p2.f32(), n * sizeof(float)), 0);
  EXPECT_EQ(std::memcmp(a1.f32(), a2.f32(), n * sizeof(float)), 0);
  EXPECT_EQ(std::memcmp(b1.f32(), b2.f32(), n * sizeof(float)), 0);
  int64_t changed = 0;  // the update really ran
  for (int64_t i = 0; i < n; ++i) changed += p1.f32()[i] != p0.f32()[i];
  EXPECT_GT(changed, 0);
}

// 0 sgd + wd, 1 momentum + wd, 2 nesterov, 3 adam + L2, 4 adamw.
INSTANTIATE_TEST_SUITE_P(AllOptimizers, SplitInvarianceTest, ::testing::Range(0, 5));

// With grad_sq_sum the update adds sum(g^2) in the same pass (momentum without decay has its
// own fused loop): the same parameters and state bits as without it, and the same norm bits
// as L2Norm, for every optimizer.
TEST(GradSquaresTest, FusedSumMatchesL2NormAndChangesNoUpdate) {
  const int64_t n = 200003;
  const Tensor g = Random({n}, 2, -0.5f, 0.5f);
  auto norm = L2Norm(g);
  ASSERT_TRUE(norm.ok());
  const SgdOptions sgd[] = {{.lr = 0.05f, .momentum = 0.9f},
                            {.lr = 0.05f, .momentum = 0.9f, .weight_decay = 0.01f},
                            {.lr = 0.05f}};
  for (const SgdOptions& base : sgd) {
    Tensor p1 = Random({n}, 1, -1.0f, 1.0f), a1 = Random({n}, 3, -0.1f, 0.1f);
    Tensor p2 = Clone(p1), a2 = Clone(a1);
    const bool mom = base.momentum > 0;
    ASSERT_TRUE(SgdUpdate(p1, g, mom ? &a1 : nullptr, base).ok());
    double sq = 0;
    SgdOptions with = base;
    with.grad_sq_sum = &sq;
    ASSERT_TRUE(SgdUpdate(p2, g, mom ? &a2 : nullptr, with).ok());
    EXPECT_EQ(std::memcmp(p1.f32(), p2.f32(), n * sizeof(float)), 0) << base.weight_decay;
    EXPECT_EQ(std::memcmp(a1.f32(), a2.f32(), n * sizeof(float)), 0) << base.weight_decay;
    EXPECT_EQ(float(std::sqrt(sq)), *norm) << "momentum " << base.momentum;
  }
  Tensor p1 = Random({n}, 1), m1 = MustEmpty({n}), v1 = MustEmpty({n});
  Tensor p2 = Clone(p1), m2 = Clone(m1), v2 = Clone(v1);
  AdamOptions ao{.lr = 3e-3f, .weight_decay = 0.1f, .decoupled_weight_decay = true, .step = 1};
  ASSERT_TRUE(AdamUpdate(p1, g, m1, v1, ao).ok());
  double sq = 0;
  ao.grad_sq_sum = &sq;
  ASSERT_TRUE(AdamUpdate(p2, g, m2, v2, ao).ok());
  EXPECT_EQ(std::memcmp(p1.f32(), p2.f32(), n * sizeof(float)), 0);
  EXPECT_EQ(float(std::sqrt(sq)), *norm);
}

// grad_terms: the update of the summed gradient in one pass (data parallel's fused sum) gives
// the same parameter, state and norm bits as summing the terms left to right into a gradient
// first and updating with it, for 1 to 4 terms, every optimizer, and a length with a ragged
// last block; `grad` is not read. Too many terms or a null one is refused.
TEST(GradTermsTest, SummedUpdateEqualsUpdateOfTheSum) {
  const int64_t n = 3 * 4096 + 1001;
  std::vector<Tensor> terms;
  for (int t = 0; t < 4; ++t) terms.push_back(Random({n}, 10 + t, -0.5f, 0.5f));
  Tensor poison = Random({n}, 99, 1e6f, 2e6f);  // passed as `grad`: must not matter
  for (size_t count = 1; count <= terms.size(); ++count) {
    Tensor sum = Clone(terms[0]);
    for (size_t t = 1; t < count; ++t) {
      for (int64_t i = 0; i < n; ++i) sum.f32()[i] += terms[t].f32()[i];
    }
    std::vector<const float*> ptrs;
    for (size_t t = 0; t < count; ++t) ptrs.push_back(terms[t].f32());
    const SgdOptions sgd[] = {{.lr = 0.05f, .momentum = 0.9f},
                              {.lr = 0.05f, .momentum = 0.9f, .weight_decay = 0.01f},
                              {.lr = 0.05f, .momentum = 0.9f, .nesterov = true},
                              {.lr = 0.05f}};
    for (const SgdOptions& base : sgd) {
      for (bool squares : {false, true}) {
        Tensor p1 = Random({n}, 1, -1.0f, 1.0f), a1 = Random({n}, 3, -0.1f, 0.1f);
        Tensor p2 = Clone(p1), a2 = Clone(a1);
        const bool mom = base.momentum > 0;
        double sq1 = 0, sq2 = 0;
        SgdOptions o1 = base, o2 = base;
        o1.grad_sq_sum = squares ? &sq1 : nullptr;
        o2.grad_sq_sum = squares ? &sq2 : nullptr;
        o2.grad_terms = ptrs;
        ASSERT_TRUE(SgdUpdate(p1, sum, mom ? &a1 : nullptr, o1).ok());
        ASSERT_TRUE(SgdUpdate(p2, poison, mom ? &a2 : nullptr, o2).ok());
        EXPECT_EQ(std::memcmp(p1.f32(), p2.f32(), n * sizeof(float)), 0)
            << count << " terms, momentum " << base.momentum << " squares " << squares;
        EXPECT_EQ(std::memcmp(a1.f32(), a2.f32(), n * sizeof(float)), 0) << count << " terms";
        EXPECT_EQ(sq1, sq2) << count << " terms";
      }
    }
    Tensor p1 = Random({n}, 1), m1 = MustEmpty({n}), v1 = MustEmpty({n});
    Tensor p2 = Clone(p1), m2 = Clone(m1), v2 = Clone(v1);
    double sq1 = 0, sq2 = 0;
    AdamOptions ao{.lr = 3e-3f, .weight_decay = 0.1f, .decoupled_weight_decay = true, .step = 1};
    ao.grad_sq_sum = &sq1;
    ASSERT_TRUE(AdamUpdate(p1, sum, m1, v1, ao).ok());
    ao.grad_sq_sum = &sq2;
    ao.grad_terms = ptrs;
    ASSERT_TRUE(AdamUpdate(p2, poison, m2, v2, ao).ok());
    EXPECT_EQ(std::memcmp(p1.f32(), p2.f32(), n * sizeof(float)), 0) << count << " terms, adam";
    EXPECT_EQ(std::memcmp(v1.f32(), v2.f32(), n * sizeof(float)), 0) << count << " terms, adam";
    EXPECT_EQ(sq1, sq2);
  }
  Tensor p = Random({n}, 1), a = Random({n}, 3);
  std::vector<const float*> many(kMaxGradTerms + 1, terms[0].f32());
  Status s = SgdUpdate(p, terms[0], &a, {.lr = 0.1f, .momentum = 0.9f, .grad_terms = many});
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("at most 8"), std::string::npos) << s.ToString();
  std::vector<const float*> with_null = {terms[0].f32(), nullptr};
  s = SgdUpdate(p, terms[0], &a, {.lr = 0.1f, .momentum = 0.9f, .grad_terms = with_null});
  EXPECT_NE(s.message().find("grad_terms[1] is null"), std::string::npos) << s.ToString();
}

// bf16_copy: every update path (plain SGD, momentum with and without the fused squares and
// the two-term sum, weight decay, Adam) writes the bf16 rounding of the parameters it just
// updated, the bits cpu::FloatsToBf16 gives (the bf16 GEMMs' cast), over a length with a
// ragged last block and a vector tail, and changes no update bit.
TEST(Bf16CopyTest, EveryUpdatePathWritesTheRoundedParameters) {
  const int64_t n = 2 * 4096 + 1003;
  const Tensor g = Random({n}, 5, -0.5f, 0.5f), g2 = Random({n}, 6, -0.5f, 0.5f);
  const float* terms[] = {g.f32(), g2.f32()};
  struct Case {
    const char* name;
    SgdOptions sgd;
    bool squares, two_terms, adam;
  };
  const Case cases[] = {
      {"sgd", {.lr = 0.05f}, false, false, false},
      {"momentum", {.lr = 0.05f, .momentum = 0.9f}, false, false, false},
      {"momentum+squares", {.lr = 0.05f, .momentum = 0.9f}, true, false, false},
      {"momentum+squares+2 terms", {.lr = 0.05f, .momentum = 0.9f}, true, true, false},
      {"momentum+decay", {.lr = 0.05f, .momentum = 0.9f, .weight_decay = 0.01f}, true, false,
       false},
      {"adamw", {}, false, false, true},
      {"adamw+squares", {}, true, true, true},
  };
  for (const Case& c : cases) {
    Tensor p1 = Random({n}, 1, -1.0f, 1.0f), s1 = Random({n}, 3, -0.1f, 0.1f),
           v1 = Random({n}, 4, 0.0f, 0.1f);
    Tensor p2 = Clone(p1), s2 = Clone(s1), v2 = Clone(v1);
    std::vector<uint16_t> copy(size_t(n) + 1, 0xdead);  // one sentinel past the end
    double sq1 = 0, sq2 = 0;
    auto update = [&](Tensor& p, Tensor& s, Tensor& v, double* sq, uint16_t* out) {
      if (c.adam) {
        AdamOptions o{.lr = 3e-3f, .weight_decay = 0.1f, .decoupled_weight_decay = true,
                      .step = 3};
        o.grad_sq_sum = c.squares ? sq : nullptr;
        if (c.two_terms) o.grad_terms = terms;
        o.bf16_copy = out;
        return AdamUpdate(p, g, s, v, o);
      }
      SgdOptions o = c.sgd;
      o.grad_sq_sum = c.squares ? sq : nullptr;
      if (c.two_terms) o.grad_terms = terms;
      o.bf16_copy = out;
      return SgdUpdate(p, g, c.sgd.momentum > 0 ? &s : nullptr, o);
    };
    ASSERT_OK(update(p1, s1, v1, &sq1, nullptr));
    ASSERT_OK(update(p2, s2, v2, &sq2, copy.data()));
    EXPECT_EQ(std::memcmp(p1.f32(), p2.f32(), n * sizeof(float)), 0) << c.name;
    EXPECT_EQ(sq1, sq2) << c.name;
    std::vector<uint16_t> want(static_cast<size_t>(n));
    cpu::FloatsToBf16(p2.f32(), n, want.data());
    int64_t wrong = 0;
    for (int64_t i = 0; i < n; ++i) wrong += copy[size_t(i)] != want[size_t(i)];
    EXPECT_EQ(wrong, 0) << c.name << ": elements whose bf16 copy is not the updated parameter";
    EXPECT_EQ(copy[size_t(n)], 0xdead) << c.name << ": wrote past the end";
  }
}

}  // namespace
}  // namespace gantry::kernels
