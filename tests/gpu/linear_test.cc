// CUDA vs CPU for the matrix ops of kernels/linear.h: Matmul (all transposes, alpha/beta,
// an empty inner dim), bf16 mode (and attention staying f32 in it), MatmulBackward, Linear forward/backward (accumulating parameter gradients), bias add and its
// backward, residual add, axpy and scale. Skips without a GPU.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <string>

#include "kernels/attention.h"
#include "kernels/linear.h"
#include "kernels/runtime.h"
#include "tests/gpu/gpu_test_util.h"
#include "tests/unit/kernels/test_util.h"

namespace gantry::kernels::gpu_test {
namespace {

using GpuLinear = GpuTest;

// op(A) [m, k] and op(B) [k, n], stored transposed where ta / tb say, and C [m, n].
struct GemmOperands {
  Pair a, b, c;
};
GemmOperands Operands(int64_t m, int64_t n, int64_t k, bool ta, bool tb, uint32_t seed) {
  return {RandomPair(ta ? Shape{k, m} : Shape{m, k}, seed + ta),
          RandomPair(tb ? Shape{n, k} : Shape{k, n}, seed + 10 + tb), RandomPair({m, n}, seed + 20)};
}

// A host copy of `t` with every element mapped through fn.
template <typename Fn>
Tensor Mapped(const Tensor& t, Fn fn) {
  Tensor out = testing::Clone(t);
  for (int64_t i = 0; i < out.numel(); ++i) out.f32()[i] = fn(out.f32()[i]);
  return out;
}

// Restores f32 CUDA products when a test ends, whatever it asserted.
struct CudaPrecisionScope {
  CudaPrecisionScope(MatmulPrecision p, double min_flops) {
    GANTRY_EXPECT_OK(SetCudaMatmulPrecision(p, min_flops));
  }
  ~CudaPrecisionScope() { GANTRY_EXPECT_OK(SetCudaMatmulPrecision(MatmulPrecision::kF32)); }
};

// train.precision bf16 on CUDA: inputs rounded to bf16, products accumulated in f32. Checked
// against a float64 reference on the bf16-rounded inputs, tight enough that unrounded (f32 or
// TF32) inputs would fail; products under the size threshold stay f32.
TEST_F(GpuLinear, Bf16MatmulRoundsInputsAndAccumulatesInF32) {
  const int64_t m = 67, n = 45, k = 129;
  CudaPrecisionScope scope(MatmulPrecision::kBf16, 0);
  const auto round = [](float x) { return Bf16ToFloat(FloatToBf16(x)); };  // nearest even
  const auto abs = [](float x) { return std::fabs(x); };
  for (int ta = 0; ta < 2; ++ta) {
    for (int tb = 0; tb < 2; ++tb) {
      auto [a, b, c] = Operands(m, n, k, ta == 1, tb == 1, 40);
      const GemmOptions o{ta == 1, tb == 1, 0.75f, 0.5f};
      GANTRY_ASSERT_OK(Matmul(a.gpu, b.gpu, c.gpu, o));
      Tensor got = ToHost(c.gpu);
      // float64 products of: the rounded inputs (the answer), the f32 inputs, and |A|, |B|, |C|
      // (the bound: 1e-5 of the summed magnitudes, far above f32 accumulation error).
      Tensor want = testing::Clone(c.cpu), f32 = testing::Clone(c.cpu), mag = Mapped(c.cpu, abs);
      const auto gemm = [&](const Tensor& x, const Tensor& y, Tensor& out) {
        testing::ReferenceGemm(ta, tb, m, n, k, 0.75f, x.f32(), ta ? m : k, y.f32(), tb ? k : n,
                               0.5f, out.f32(), n);
      };
      gemm(Mapped(a.cpu, round), Mapped(b.cpu, round), want);
      gemm(a.cpu, b.cpu, f32);
      gemm(Mapped(a.cpu, abs), Mapped(b.cpu, abs), mag);
      double worst = 0, f32_gap = 0;
      for (int64_t i = 0; i < m * n; ++i) {
        const double tol = 1e-5 * mag.f32()[i] + 1e-6, w = want.f32()[i];
        worst = std::max(worst, std::fabs(got.f32()[i] - w) / tol);
        f32_gap = std::max(f32_gap, std::fabs(f32.f32()[i] - w) / tol);
      }
      EXPECT_LE(worst, 1.0) << "ta=" << ta << " tb=" << tb << ": off the bf16 reference";
      EXPECT_GT(f32_gap, 10.0) << "the test cannot tell bf16 from f32 inputs";
    }
  }
}

TEST_F(GpuLinear, Bf16LeavesProductsUnderTheThresholdInF32) {
  CudaPrecisionScope scope(MatmulPrecision::kBf16, 1e12);
  Pair a = RandomPair({33, 48}, 70), b = RandomPair({48, 19}, 71), c = ZeroPair({33, 19});
  GANTRY_ASSERT_OK(Matmul(a.cpu, b.cpu, c.cpu));
  GANTRY_ASSERT_OK(Matmul(a.gpu, b.gpu, c.gpu));
  ExpectNear(c, kRtol, kAtol, "small product in bf16 mode");
}

// Attention's per-head products stay f32 in bf16 mode, as on the CPU (kernels/runtime.h):
// the bf16 attention forward and backward give the f32 results bit for bit, and match the CPU.
TEST_F(GpuLinear, Bf16LeavesAttentionProductsInF32) {
  const int64_t B = 2, T = 64, C = 128, H = 4;
  Pair qkv = RandomPair({B, T, 3 * C}, 80), dout = RandomPair({B, T, C}, 81);
  struct Run {
    Tensor out, att, dqkv, datt;
  };
  const auto run = [&](Run& r) {
    r.out = Empty({B, T, C}, DType::kF32, Gpu());
    r.att = Empty({B, H, T, T}, DType::kF32, Gpu());
    r.dqkv = Empty({B, T, 3 * C}, DType::kF32, Gpu());
    r.datt = Empty({B, H, T, T}, DType::kF32, Gpu());
    GANTRY_ASSERT_OK(CausalSelfAttentionForward(qkv.gpu, int(H), r.out, r.att));
    GANTRY_ASSERT_OK(
        CausalSelfAttentionBackward(qkv.gpu, r.att, dout.gpu, int(H), r.dqkv, r.datt));
  };
  Run f32, bf16;
  run(f32);
  {
    CudaPrecisionScope scope(MatmulPrecision::kBf16, 0);  // every product over the threshold
    run(bf16);
  }
  const auto same = [](const Tensor& a, const Tensor& b) {
    Tensor x = ToHost(a), y = ToHost(b);
    return std::memcmp(x.raw(), y.raw(), x.nbytes()) == 0;
  };
  EXPECT_TRUE(same(f32.out, bf16.out)) << "bf16 mode changed attention's output";
  EXPECT_TRUE(same(f32.att, bf16.att)) << "bf16 mode changed attention's probabilities";
  EXPECT_TRUE(same(f32.dqkv, bf16.dqkv)) << "bf16 mode changed attention's dqkv";
  Tensor out_cpu = Empty({B, T, C}, DType::kF32, Device::Cpu());
  Tensor att_cpu = Empty({B, H, T, T}, DType::kF32, Device::Cpu());
  GANTRY_ASSERT_OK(CausalSelfAttentionForward(qkv.cpu, int(H), out_cpu, att_cpu));
  ExpectNear(out_cpu, bf16.out, kRtol, kAtol, "bf16-mode attention vs the CPU");
}

// k == 0 (op(A) is [m, 0]: a transposed A with no rows, e.g. a weight gradient over an empty
// batch): C = beta * C as on the CPU, zeros for beta == 0 even where C held NaN, and C
// untouched for beta == 1 (MatmulBackward's accumulating db). Not left to cuBLAS.
TEST_F(GpuLinear, MatmulWithAnEmptyInnerDimScalesC) {
  const int64_t m = 37, n = 45;
  for (float beta : {0.0f, 0.5f, 1.0f}) {
    const std::string tag = " beta=" + std::to_string(beta);
    Pair a = ZeroPair({0, m}), b = ZeroPair({0, n}), c = RandomPair({m, n}, 90);
    c.cpu.f32()[3] = NAN;  // stays NaN unless beta == 0 (both backends)
    if (beta == 0.0f) c.cpu.f32()[m * n - 1] = INFINITY;
    c = MakePair(c.cpu);
    const GemmOptions o{true, false, 1.25f, beta};
    GANTRY_ASSERT_OK(Matmul(a.cpu, b.cpu, c.cpu, o));
    GANTRY_ASSERT_OK(Matmul(a.gpu, b.gpu, c.gpu, o));
    ExpectNear(c, 0.0, 0.0, "Matmul k=0" + tag);
    if (beta == 0.0f) {
      Tensor h = ToHost(c.gpu);
      for (int64_t i = 0; i < h.numel(); ++i) ASSERT_EQ(h.f32()[i], 0.0f) << i << tag;
    }
  }
  Pair a = ZeroPair({0, 24}), b = RandomPair({24, 19}, 91), dc = ZeroPair({0, 19});
  Pair da = ZeroPair({0, 24}), db = RandomPair({24, 19}, 92);  // db accumulates nothing
  GANTRY_ASSERT_OK(MatmulBackward(a.cpu, b.cpu, dc.cpu, &da.cpu, &db.cpu));
  GANTRY_ASSERT_OK(MatmulBackward(a.gpu, b.gpu, dc.gpu, &da.gpu, &db.gpu));
  ExpectNear(db, 0.0, 0.0, "MatmulBackward over no rows");
  {
    CudaPrecisionScope scope(MatmulPrecision::kBf16, 0);  // the bf16 path takes k == 0 too
    Pair c = RandomPair({m, n}, 93);
    const GemmOptions o{true, false, 1.0f, 0.0f};
    GANTRY_ASSERT_OK(Matmul(ZeroPair({0, m}).gpu, ZeroPair({0, n}).gpu, c.gpu, o));
    Tensor h = ToHost(c.gpu);
    for (int64_t i = 0; i < h.numel(); ++i) ASSERT_EQ(h.f32()[i], 0.0f) << i << " (bf16 mode)";
  }
}

TEST_F(GpuLinear, MatmulAllTransposesWithAccumulation) {
  const int64_t m = 67, n = 45, k = 129;
  for (int ta = 0; ta < 2; ++ta) {
    for (int tb = 0; tb < 2; ++tb) {
      auto [a, b, c] = Operands(m, n, k, ta == 1, tb == 1, 10);
      const GemmOptions o{ta == 1, tb == 1, 0.75f, 0.5f};
      GANTRY_ASSERT_OK(Matmul(a.cpu, b.cpu, c.cpu, o));
      GANTRY_ASSERT_OK(Matmul(a.gpu, b.gpu, c.gpu, o));
      ExpectNear(c, kRtol, kAtol, "Matmul ta=" + std::to_string(ta) + " tb=" + std::to_string(tb));
    }
  }
}

TEST_F(GpuLinear, MatmulFoldsLeadingDims) {
  Pair a = RandomPair({3, 5, 16}, 1);
  Pair b = RandomPair({16, 24}, 2);
  Pair c = ZeroPair({3, 5, 24});
  GANTRY_ASSERT_OK(Matmul(a.cpu, b.cpu, c.cpu));
  GANTRY_ASSERT_OK(Matmul(a.gpu, b.gpu, c.gpu));
  ExpectNear(c, kRtol, kAtol, "Matmul rank 3");
}

TEST_F(GpuLinear, MatmulBackward) {
  Pair a = RandomPair({33, 48}, 3), b = RandomPair({48, 19}, 4), dc = RandomPair({33, 19}, 5);
  Pair da = RandomPair({33, 48}, 6), db = RandomPair({48, 19}, 7);  // db accumulates
  GANTRY_ASSERT_OK(MatmulBackward(a.cpu, b.cpu, dc.cpu, &da.cpu, &db.cpu));
  GANTRY_ASSERT_OK(MatmulBackward(a.gpu, b.gpu, dc.gpu, &da.gpu, &db.gpu));
  ExpectNear(da, kRtol, kAtol, "da");
  ExpectNear(db, kRtol, kAtol, "db");
}

TEST_F(GpuLinear, LinearForwardWithAndWithoutBias) {
  Pair x = RandomPair({4, 7, 96}, 8), w = RandomPair({80, 96}, 9), b = RandomPair({80}, 10);
  Pair y = ZeroPair({4, 7, 80}), y2 = ZeroPair({4, 7, 80});
  GANTRY_ASSERT_OK(LinearForward(x.cpu, w.cpu, &b.cpu, y.cpu));
  GANTRY_ASSERT_OK(LinearForward(x.gpu, w.gpu, &b.gpu, y.gpu));
  ExpectNear(y, kRtol, kAtol, "y with bias");
  GANTRY_ASSERT_OK(LinearForward(x.cpu, w.cpu, nullptr, y2.cpu));
  GANTRY_ASSERT_OK(LinearForward(x.gpu, w.gpu, nullptr, y2.gpu));
  ExpectNear(y2, kRtol, kAtol, "y without bias");
}

TEST_F(GpuLinear, LinearBackwardAccumulatesParameterGradients) {
  // 300 rows: more than one row chunk in the bias column reduction.
  Pair x = RandomPair({300, 64}, 11), w = RandomPair({40, 64}, 12), dy = RandomPair({300, 40}, 13);
  Pair dx = RandomPair({300, 64}, 14), dw = RandomPair({40, 64}, 15), db = RandomPair({40}, 16);
  GANTRY_ASSERT_OK(LinearBackward(x.cpu, w.cpu, dy.cpu, &dx.cpu, dw.cpu, &db.cpu));
  GANTRY_ASSERT_OK(LinearBackward(x.gpu, w.gpu, dy.gpu, &dx.gpu, dw.gpu, &db.gpu));
  ExpectNear(dx, kRtol, kAtol, "dx");
  ExpectNear(dw, kRtol, 1e-4, "dw");
  ExpectNear(db, kRtol, 1e-4, "db");
}

TEST_F(GpuLinear, BiasAddAndBackwardOnManyRows) {
  Pair y = RandomPair({5000, 37}, 17), b = RandomPair({37}, 18);
  GANTRY_ASSERT_OK(BiasAddForward(y.cpu, b.cpu));
  GANTRY_ASSERT_OK(BiasAddForward(y.gpu, b.gpu));
  ExpectNear(y, kRtol, kAtol, "BiasAddForward");
  Pair db = RandomPair({37}, 19);
  GANTRY_ASSERT_OK(BiasAddBackward(y.cpu, db.cpu));
  GANTRY_ASSERT_OK(BiasAddBackward(y.gpu, db.gpu));
  ExpectNear(db, kRtol, 1e-3, "BiasAddBackward (sum of 5000 rows)");
}

TEST_F(GpuLinear, AddAddInPlaceScale) {
  Pair a = RandomPair({1001}, 20), b = RandomPair({1001}, 21), y = ZeroPair({1001});
  GANTRY_ASSERT_OK(Add(a.cpu, b.cpu, y.cpu));
  GANTRY_ASSERT_OK(Add(a.gpu, b.gpu, y.gpu));
  ExpectNear(y, kRtol, kAtol, "Add");
  GANTRY_ASSERT_OK(Add(y.cpu, b.cpu, y.cpu));  // aliasing output
  GANTRY_ASSERT_OK(Add(y.gpu, b.gpu, y.gpu));
  ExpectNear(y, kRtol, kAtol, "Add aliased");
  GANTRY_ASSERT_OK(AddInPlace(y.cpu, a.cpu, -0.3f));
  GANTRY_ASSERT_OK(AddInPlace(y.gpu, a.gpu, -0.3f));
  ExpectNear(y, kRtol, kAtol, "AddInPlace");
  GANTRY_ASSERT_OK(Scale(y.cpu, 3.5f));
  GANTRY_ASSERT_OK(Scale(y.gpu, 3.5f));
  ExpectNear(y, kRtol, kAtol, "Scale");
}

TEST_F(GpuLinear, MismatchedShapesAreRejected) {
  Pair a = RandomPair({4, 8}, 22), b = RandomPair({9, 3}, 23), c = ZeroPair({4, 3});
  const Status s = Matmul(a.gpu, b.gpu, c.gpu);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s.ToString();
}

}  // namespace
}  // namespace gantry::kernels::gpu_test
