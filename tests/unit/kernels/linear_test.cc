// GEMM (both CPU paths, every transpose), Matmul/Linear forward vs a double reference,
// gradient checks for every backward in kernels/linear.h, and error messages.
#include "kernels/linear.h"

#include <gtest/gtest-spi.h>
#include <gtest/gtest.h>

#include <atomic>
#include <cstring>
#include <thread>
#include <vector>

#include "kernels/cpu/cpu_ops.h"
#include "kernels/optim.h"
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

struct GemmCase {
  bool ta, tb;
  int64_t m, n, k;
  float alpha, beta;
};

// Random op(A), op(B) and C of a case, stored with padded leading dims (seeds seed..seed+2).
struct GemmOperands {
  int64_t lda, ldb, ldc;
  Tensor a, b, c0;
};
GemmOperands Operands(const GemmCase& g, uint32_t seed) {
  const int64_t lda = (g.ta ? g.m : g.k) + 3, ldb = (g.tb ? g.k : g.n) + 1, ldc = g.n + 2;
  return {lda, ldb, ldc, Random({(g.ta ? g.k : g.m) * lda}, seed),
          Random({(g.tb ? g.n : g.k) * ldb}, seed + 1), Random({g.m * ldc}, seed + 2)};
}

class SgemmTest : public ::testing::TestWithParam<GemmCase> {};

TEST_P(SgemmTest, BothBackendsMatchDoubleReference) {
  const GemmCase g = GetParam();
  const auto [lda, ldb, ldc, a, b, c0] = Operands(g, 11);
  Tensor ref = Clone(c0), fast = Clone(c0), portable = Clone(c0);
  testing::ReferenceGemm(g.ta, g.tb, g.m, g.n, g.k, g.alpha, a.f32(), lda, b.f32(), ldb, g.beta,
                         ref.f32(), ldc);
  ASSERT_OK(cpu::Sgemm(g.ta, g.tb, g.m, g.n, g.k, g.alpha, a.f32(), lda, b.f32(), ldb, g.beta,
                       fast.f32(), ldc));
  ASSERT_OK(cpu::SgemmPortable(g.ta, g.tb, g.m, g.n, g.k, g.alpha, a.f32(), lda, b.f32(), ldb,
                               g.beta, portable.f32(), ldc));
  EXPECT_LT(RelError(fast, ref), 2e-6);
  EXPECT_LT(RelError(portable, ref), 2e-6);
  // Padding columns between rows of C are untouched.
  for (int64_t i = 0; i < g.m; ++i) {
    for (int64_t j = g.n; j < ldc; ++j) EXPECT_EQ(fast.f32()[i * ldc + j], c0.f32()[i * ldc + j]);
  }
}

// Mixed precision: the product of the bf16-rounded inputs, accumulated in f32, into f32 C
// (alpha, beta, leading dims and padding as in f32).
TEST_P(SgemmTest, Bf16IsTheProductOfBf16RoundedInputs) {
  const GemmCase g = GetParam();
  const auto [lda, ldb, ldc, a, b, c0] = Operands(g, 21);
  Tensor a16 = Clone(a), b16 = Clone(b), ref = Clone(c0), got = Clone(c0);
  for (Tensor* t : {&a16, &b16}) {
    for (int64_t i = 0; i < t->numel(); ++i) t->f32()[i] = Bf16ToFloat(FloatToBf16(t->f32()[i]));
  }
  testing::ReferenceGemm(g.ta, g.tb, g.m, g.n, g.k, g.alpha, a16.f32(), lda, b16.f32(), ldb,
                         g.beta, ref.f32(), ldc);
  struct Restore {
    ~Restore() { (void)SetCpuMatmulPrecision(MatmulPrecision::kF32); }
  } restore;
  ASSERT_OK(SetCpuMatmulPrecision(MatmulPrecision::kBf16, /*bf16_min_flops=*/0));
  ASSERT_OK(cpu::Sgemm(g.ta, g.tb, g.m, g.n, g.k, g.alpha, a.f32(), lda, b.f32(), ldb, g.beta,
                       got.f32(), ldc));
  EXPECT_LT(RelError(got, ref), 1e-5) << "bf16 support: " << CpuBf16Support();
  for (int64_t i = 0; i < g.m; ++i) {
    for (int64_t j = g.n; j < ldc; ++j) EXPECT_EQ(got.f32()[i * ldc + j], c0.f32()[i * ldc + j]);
  }
}

// The same bf16 product from several threads at once (pool tiles and attention heads do this):
// every thread must get the exact single-threaded result (oneDNN scratchpads are per thread).
TEST(SgemmBf16Test, ConcurrentProductsOfOneShapeAgree) {
  const int64_t m = 192, n = 160, k = 384;
  Tensor a = Random({m * k}, 31), b = Random({k * n}, 32);
  struct Restore {
    ~Restore() { (void)SetCpuMatmulPrecision(MatmulPrecision::kF32); }
  } restore;
  ASSERT_OK(SetCpuMatmulPrecision(MatmulPrecision::kBf16, /*bf16_min_flops=*/0));
  Tensor want = MustEmpty({m * n});
  ASSERT_OK(cpu::Sgemm(false, true, m, n, k, 0.5f, a.f32(), k, b.f32(), k, 0.0f, want.f32(), n));
  std::vector<Tensor> got;
  for (int t = 0; t < 4; ++t) got.push_back(MustEmpty({m * n}));
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int rep = 0; rep < 30; ++rep) {
        if (!cpu::Sgemm(false, true, m, n, k, 0.5f, a.f32(), k, b.f32(), k, 0.0f, got[t].f32(), n)
                 .ok() ||
            std::memcmp(got[t].f32(), want.f32(), want.nbytes()) != 0) {
          ++failures;
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures.load(), 0);
}

// The parameters' bf16 copy (runtime.h): a product reads the optimizer's copy only when the
// optimizer wrote all of it since the last epoch began, and it then gives the bits of a fresh
// cast. After parameters are loaded from elsewhere, or when only part of them went through
// the optimizer (a sharded optimizer), products cast the current values again: a stale copy
// would give the old parameters' product here.
TEST(SgemmBf16Test, OptimizerCopyIsUsedOnlyWhenItCoversEveryParameter) {
  const int64_t m = 64, n = 96, k = 128, total = n * k + 37;  // W, then a "bias"
  Tensor params = Random({total}, 51), x = Random({m * k}, 52);
  struct Restore {
    ~Restore() {
      SetMatmulWeights(nullptr, 0);
      (void)SetCpuMatmulPrecision(MatmulPrecision::kF32);
    }
  } restore;
  SetMatmulWeights(params.raw(), params.nbytes());
  EXPECT_EQ(MatmulWeightsBf16Copy(params.f32(), total), nullptr) << "f32 products need no copy";
  ASSERT_OK(SetCpuMatmulPrecision(MatmulPrecision::kBf16, /*bf16_min_flops=*/0));
  // x * W^T, reading W from the parameters (cached / copied) and from a clone (cast afresh).
  auto product = [&](bool from_params) {
    Tensor w = from_params ? params : Clone(params);
    Tensor y = MustEmpty({m * n});
    EXPECT_TRUE(cpu::Sgemm(false, true, m, n, k, 1.0f, x.f32(), k, w.f32(), k, 0.0f, y.f32(), n)
                    .ok());
    return std::vector<float>(y.f32(), y.f32() + m * n);
  };
  auto current = [&] { return cpu::MatmulWeightsOf(params.f32(), 4).bf16_copy_current; };
  auto sgd = [&](int64_t begin, int64_t count) {
    Tensor p = params.View(begin, {count});
    const Tensor g = Random({count}, 53);
    SgdOptions o{.lr = 0.5f};
    o.bf16_copy = MatmulWeightsBf16Copy(p.f32(), count);
    GANTRY_RETURN_IF_ERROR(SgdUpdate(p, g, nullptr, o));
    MatmulWeightsBf16CopyWritten(count);
    return OkStatus();
  };
  NewMatmulWeightsEpoch();
  EXPECT_FALSE(current()) << "nothing wrote the copy yet";
  const std::vector<float> before = product(true);
  EXPECT_EQ(before, product(false));

  // The optimizer updates every parameter (in two ranges, as backward does): copy current.
  ASSERT_OK(sgd(n * k, total - n * k));
  ASSERT_OK(sgd(0, n * k));
  NewMatmulWeightsEpoch();
  EXPECT_TRUE(current());
  const std::vector<float> updated = product(true);
  EXPECT_EQ(updated, product(false));
  EXPECT_NE(updated, before);

  // Then a load overwrites W: the next epoch must not take the copy.
  ASSERT_OK(sgd(0, total));
  for (int64_t i = 0; i < n * k; ++i) params.f32()[i] *= -2.0f;
  NewMatmulWeightsEpochAfterLoad();
  EXPECT_FALSE(current());
  EXPECT_EQ(product(true), product(false));

  // Half through the optimizer, half written directly (an allgather after a sharded update).
  ASSERT_OK(sgd(0, total / 2));
  for (int64_t i = total / 2; i < n * k; ++i) params.f32()[i] += 0.25f;
  NewMatmulWeightsEpoch();
  EXPECT_FALSE(current());
  EXPECT_EQ(product(true), product(false));
}

// Products below the bf16 threshold (attention's per-head blocks) run the f32 path: the same
// bits as precision f32; above it, bf16 (different bits).
TEST(SgemmBf16Test, SmallProductsStayF32) {
  struct Restore {
    ~Restore() { (void)SetCpuMatmulPrecision(MatmulPrecision::kF32); }
  } restore;
  for (const int64_t m : {32, 256}) {
    const int64_t n = 128, k = 64;  // 2mnk = 0.5 and 4.2 MFLOP
    Tensor a = Random({m * k}, 41), b = Random({n * k}, 42);
    Tensor f32 = MustEmpty({m * n}), mixed = MustEmpty({m * n});
    ASSERT_OK(SetCpuMatmulPrecision(MatmulPrecision::kF32));
    ASSERT_OK(cpu::Sgemm(false, true, m, n, k, 1.0f, a.f32(), k, b.f32(), k, 0.0f, f32.f32(), n));
    ASSERT_OK(SetCpuMatmulPrecision(MatmulPrecision::kBf16, /*bf16_min_flops=*/4e6));
    ASSERT_OK(cpu::Sgemm(false, true, m, n, k, 1.0f, a.f32(), k, b.f32(), k, 0.0f, mixed.f32(), n));
    const bool same = std::memcmp(f32.f32(), mixed.f32(), f32.nbytes()) == 0;
    EXPECT_EQ(same, m == 32) << "m=" << m;
  }
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, SgemmTest,
    ::testing::Values(GemmCase{false, false, 33, 17, 9, 1.0f, 0.0f},
                      GemmCase{true, false, 20, 31, 65, 0.5f, 1.0f},
                      GemmCase{false, true, 64, 5, 300, 1.0f, 0.25f},
                      GemmCase{true, true, 7, 129, 40, -2.0f, 1.0f},
                      GemmCase{false, false, 300, 257, 129, 1.0f, 0.0f},
                      GemmCase{false, true, 1, 1, 1, 1.0f, 0.0f},
                      GemmCase{true, false, 5, 4, 0, 1.0f, 0.5f},
                      // Tall weight-gradient shapes (m >= 2n, aT*b): the transposed-scratch path.
                      GemmCase{true, false, 300, 70, 600, 0.5f, 0.0f},
                      GemmCase{true, false, 300, 70, 600, 0.5f, 0.25f},
                      GemmCase{true, false, 1030, 64, 900, -1.0f, 1.0f},
                      GemmCase{true, false, 4096, 100, 513, 2.0f, 0.0f}));

TEST(MatmulTest, FoldsLeadingDimsAndChecksInner) {
  Tensor a = Random({2, 3, 4}, 1), b = Random({4, 5}, 2), c = MustEmpty({2, 3, 5});
  ASSERT_OK(Matmul(a, b, c));
  Tensor ref = MustEmpty({6, 5});
  testing::ReferenceGemm(false, false, 6, 5, 4, 1.0f, a.f32(), 4, b.f32(), 5, 0.0f, ref.f32(), 5);
  EXPECT_LT(RelError(c, ref), 1e-6);
  Tensor bad = MustEmpty({3, 5});
  Status st = Matmul(a, bad, c);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("Matmul"), std::string::npos);
  EXPECT_NE(st.message().find("K=4"), std::string::npos) << st.message();
  Tensor wrong_c = MustEmpty({6, 4});
  st = Matmul(a, b, wrong_c);
  EXPECT_NE(st.message().find("'c'"), std::string::npos) << st.message();
  Tensor ints = MustEmpty({4, 5}, DType::kI32);
  EXPECT_NE(Matmul(a, ints, c).message().find("dtype i32"), std::string::npos);
}

TEST(MatmulTest, TransposedOptionsMatchReference) {
  Tensor a = Random({7, 3}, 3), b = Random({5, 7}, 4), c = Random({3, 5}, 5);
  Tensor ref = Clone(c);
  ASSERT_OK(Matmul(a, b, c, {.trans_a = true, .trans_b = true, .alpha = 2.0f, .beta = 1.0f}));
  testing::ReferenceGemm(true, true, 3, 5, 7, 2.0f, a.f32(), 3, b.f32(), 7, 1.0f, ref.f32(), 5);
  EXPECT_LT(RelError(c, ref), 1e-6);
}

TEST(MatmulTest, BackwardMatchesFiniteDifferences) {
  Tensor a = Random({6, 4}, 6), b = Random({4, 5}, 7), c = MustEmpty({6, 5});
  Tensor w = Random({6, 5}, 8);
  Tensor da = Random({6, 4}, 9);  // garbage: must be overwritten
  Tensor db = MustEmpty({4, 5});
  ASSERT_OK(MatmulBackward(a, b, w, &da, &db));
  auto objective = [&] {
    EXPECT_TRUE(Matmul(a, b, c).ok());
    return Dot(c, w);
  };
  ExpectGradient("da", a, da, objective);
  ExpectGradient("db", b, db, objective);
}

// The checker itself: a gradient off by 3% must fail it.
TEST(GradCheckTest, CatchesAWrongGradient) {
  Tensor a = Random({6, 4}, 6), b = Random({4, 5}, 7), c = MustEmpty({6, 5});
  Tensor w = Random({6, 5}, 8), db = MustEmpty({4, 5});
  ASSERT_OK(MatmulBackward(a, b, w, nullptr, &db));
  ASSERT_OK(Scale(db, 1.03f));
  auto objective = [&] {
    EXPECT_TRUE(Matmul(a, b, c).ok());
    return Dot(c, w);
  };
  EXPECT_NONFATAL_FAILURE(ExpectGradient("scaled db", b, db, objective), "scaled db");
}

TEST(LinearTest, ForwardMatchesReferenceWithAndWithoutBias) {
  Tensor x = Random({2, 5, 8}, 1), w = Random({3, 8}, 2), b = Random({3}, 3);
  Tensor y = MustEmpty({2, 5, 3}), ref = MustEmpty({10, 3});
  ASSERT_OK(LinearForward(x, w, &b, y));
  testing::ReferenceGemm(false, true, 10, 3, 8, 1.0f, x.f32(), 8, w.f32(), 8, 0.0f, ref.f32(), 3);
  for (int64_t r = 0; r < 10; ++r) {
    for (int64_t j = 0; j < 3; ++j) ref.f32()[r * 3 + j] += b.f32()[j];
  }
  EXPECT_LT(RelError(y, ref), 1e-6);
  ASSERT_OK(LinearForward(x, w, nullptr, y));
  for (int64_t r = 0; r < 10; ++r) {
    for (int64_t j = 0; j < 3; ++j) ref.f32()[r * 3 + j] -= b.f32()[j];
  }
  EXPECT_LT(RelError(y, ref), 1e-5);
}

TEST(LinearTest, BackwardMatchesFiniteDifferencesAndAccumulates) {
  Tensor x = Random({9, 6}, 4), w = Random({300, 6}, 5), b = Random({300}, 6);
  Tensor y = MustEmpty({9, 300}), dy = Random({9, 300}, 7);
  Tensor dx = Random({9, 6}, 8), dw = MustEmpty({300, 6}), db = MustEmpty({300});
  ASSERT_OK(LinearBackward(x, w, dy, &dx, dw, &db));
  auto objective = [&] {
    EXPECT_TRUE(LinearForward(x, w, &b, y).ok());
    return Dot(y, dy);
  };
  ExpectGradient("dx", x, dx, objective);
  ExpectGradient("dw", w, dw, objective);
  ExpectGradient("db", b, db, objective);
  // A second call accumulates dw/db (doubles them) and overwrites dx.
  Tensor dw1 = Clone(dw), db1 = Clone(db), dx1 = Clone(dx);
  ASSERT_OK(LinearBackward(x, w, dy, &dx, dw, &db));
  ASSERT_OK(Scale(dw1, 2.0f));
  ASSERT_OK(Scale(db1, 2.0f));
  EXPECT_LT(RelError(dw, dw1), 1e-6);
  EXPECT_LT(RelError(db, db1), 1e-6);
  EXPECT_LT(RelError(dx, dx1), 1e-7);
  ASSERT_OK(LinearBackward(x, w, dy, nullptr, dw, nullptr));  // optional grads may be skipped
}

TEST(LinearTest, ErrorsNameOpAndTensor) {
  Tensor x = Random({4, 8}, 1), w = Random({3, 7}, 2), y = MustEmpty({4, 3});
  Status st = LinearForward(x, w, nullptr, y);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("LinearForward"), std::string::npos);
  EXPECT_NE(st.message().find("'x'"), std::string::npos) << st.message();
  Tensor w2 = Random({3, 8}, 2), b = MustEmpty({4});
  st = LinearForward(x, w2, &b, y);
  EXPECT_NE(st.message().find("'b'"), std::string::npos) << st.message();
  Tensor dw = MustEmpty({8, 3});
  st = LinearBackward(x, w2, y, nullptr, dw, nullptr);
  EXPECT_NE(st.message().find("'dw'"), std::string::npos) << st.message();
  Tensor gpu_y = Tensor::Wrap(nullptr, {4, 3}, DType::kF32, Device::Cuda(0));
  EXPECT_FALSE(LinearForward(x, w2, nullptr, gpu_y).ok());
}

TEST(BiasAddTest, ForwardAndBackward) {
  Tensor y = Random({5, 7}, 1), b = Random({7}, 2), y0 = Clone(y);
  ASSERT_OK(BiasAddForward(y, b));
  for (int64_t i = 0; i < 35; ++i) EXPECT_FLOAT_EQ(y.f32()[i], y0.f32()[i] + b.f32()[i % 7]);
  Tensor dy = Random({5, 7}, 3), db = MustEmpty({7});
  ASSERT_OK(BiasAddBackward(dy, db));
  ExpectGradient("db", b, db, [&] {
    Tensor t = Clone(y0);
    EXPECT_TRUE(BiasAddForward(t, b).ok());
    return Dot(t, dy);
  });
  Tensor wrong = MustEmpty({6});
  EXPECT_NE(BiasAddBackward(dy, wrong).message().find("'db'"), std::string::npos);
}

TEST(ElementwiseTest, AddAddInPlaceScale) {
  Tensor a = Random({100}, 1), b = Random({10, 10}, 2), y = MustEmpty({100});
  ASSERT_OK(Add(a, b, y));
  for (int64_t i = 0; i < 100; ++i) EXPECT_FLOAT_EQ(y.f32()[i], a.f32()[i] + b.f32()[i]);
  ASSERT_OK(Add(a, b, a));  // aliasing the output with an input is allowed
  EXPECT_LT(RelError(a, y), 1e-7);
  Tensor z = Clone(y);
  ASSERT_OK(AddInPlace(z, b, -0.5f));
  for (int64_t i = 0; i < 100; ++i) EXPECT_FLOAT_EQ(z.f32()[i], y.f32()[i] - 0.5f * b.f32()[i]);
  ASSERT_OK(Scale(z, 3.0f));
  EXPECT_FLOAT_EQ(z.f32()[7], 3.0f * (y.f32()[7] - 0.5f * b.f32()[7]));
  Tensor small = MustEmpty({99});
  EXPECT_NE(Add(a, small, y).message().find("'b'"), std::string::npos);
}

// The same big op at 1 and at 2 threads gives the same numbers (the parallel paths split
// rows or columns, never a reduction order).
TEST(LinearTest, ThreadCountsAgree) {
  const int saved = NumThreads();
  Tensor x = Random({512, 256}, 1), w = Random({1024, 256}, 2), b = Random({1024}, 3);
  Tensor dy = Random({512, 1024}, 4);
  Tensor y[2], dx[2], dw[2], db[2];
  for (int t = 0; t < 2; ++t) {
    SetNumThreads(t + 1);
    y[t] = MustEmpty({512, 1024});
    dx[t] = MustEmpty({512, 256});
    dw[t] = MustEmpty({1024, 256});
    db[t] = MustEmpty({1024});
    ASSERT_OK(LinearForward(x, w, &b, y[t]));
    ASSERT_OK(LinearBackward(x, w, dy, &dx[t], dw[t], &db[t]));
  }
  SetNumThreads(saved);
  EXPECT_LT(RelError(y[1], y[0]), 1e-5);
  EXPECT_LT(RelError(dx[1], dx[0]), 1e-5);
  EXPECT_LT(RelError(dw[1], dw[0]), 1e-5);
  EXPECT_LT(RelError(db[1], db[0]), 1e-7);
}

}  // namespace
}  // namespace gantry::kernels
