// CUDA vs CPU for activations, softmax (also with -inf entries), LayerNorm and causal
// self-attention, forward and backward (parameter gradients accumulate onto non-zero values).
// Skips without a GPU.
#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "kernels/activation.h"
#include "kernels/attention.h"
#include "kernels/norm.h"
#include "tests/gpu/gpu_test_util.h"

namespace gantry::kernels::gpu_test {
namespace {

using GpuNorm = GpuTest;

TEST_F(GpuNorm, ActivationsForwardBackward) {
  for (Activation act : {Activation::kRelu, Activation::kSigmoid, Activation::kTanh,
                         Activation::kGelu}) {
    const std::string name = ActivationName(act);
    Pair x = RandomPair({3, 1000}, 1, -4.0f, 4.0f), dy = RandomPair({3, 1000}, 2);
    Pair y = ZeroPair({3, 1000}), dx = ZeroPair({3, 1000});
    GANTRY_ASSERT_OK(ActivationForward(act, x.cpu, y.cpu));
    GANTRY_ASSERT_OK(ActivationForward(act, x.gpu, y.gpu));
    ExpectNear(y, kRtol, kAtol, name + " forward");
    GANTRY_ASSERT_OK(ActivationBackward(act, x.cpu, y.cpu, dy.cpu, dx.cpu));
    GANTRY_ASSERT_OK(ActivationBackward(act, x.gpu, y.gpu, dy.gpu, dx.gpu));
    ExpectNear(dx, kRtol, kAtol, name + " backward");
  }
}

TEST_F(GpuNorm, SoftmaxForwardBackward) {
  for (int64_t cols : {7, 32, 1000, 8192}) {
    const std::string tag = " cols=" + std::to_string(cols);
    Pair x = RandomPair({19, cols}, 3, -8.0f, 8.0f), dy = RandomPair({19, cols}, 4);
    Pair y = ZeroPair({19, cols}), dx = ZeroPair({19, cols});
    GANTRY_ASSERT_OK(SoftmaxForward(x.cpu, y.cpu));
    GANTRY_ASSERT_OK(SoftmaxForward(x.gpu, y.gpu));
    ExpectNear(y, kRtol, 1e-7, "softmax" + tag);
    GANTRY_ASSERT_OK(SoftmaxBackward(y.cpu, dy.cpu, dx.cpu));
    GANTRY_ASSERT_OK(SoftmaxBackward(y.gpu, dy.gpu, dx.gpu));
    ExpectNear(dx, kRtol, 1e-6, "softmax backward" + tag);
  }
}

// Masked (-inf) entries get probability 0 wherever they sit in the row: a lane whose first
// columns are -inf must not compute exp(-inf - -inf) = NaN. Rows: the first 32 columns -inf
// (every lane starts on one), every other column -inf, one finite column last, and all -inf
// (NaN on both backends: no finite maximum). The CPU gives exp(-87.33) / sum ~ 1e-38 for the
// masked entries, inside the tolerance of 0.
TEST_F(GpuNorm, SoftmaxWithMinusInfinityEntries) {
  for (int64_t cols : {7, 40, 100}) {
    const std::string tag = " cols=" + std::to_string(cols);
    Pair x = RandomPair({4, cols}, 15, -8.0f, 8.0f), dy = RandomPair({4, cols}, 16);
    float* h = x.cpu.f32();
    for (int64_t c = 0; c < cols; ++c) {
      if (c < 32 && c < cols - 1) h[c] = -INFINITY;
      if (c % 2 == 0) h[cols + c] = -INFINITY;
      if (c < cols - 1) h[2 * cols + c] = -INFINITY;
      h[3 * cols + c] = -INFINITY;
    }
    x = MakePair(x.cpu);
    Pair y = ZeroPair({4, cols}), dx = ZeroPair({4, cols});
    GANTRY_ASSERT_OK(SoftmaxForward(x.cpu, y.cpu));
    GANTRY_ASSERT_OK(SoftmaxForward(x.gpu, y.gpu));
    ExpectNear(y, kRtol, 1e-7, "softmax with -inf" + tag);
    Tensor got = ToHost(y.gpu);
    for (int64_t i = 0; i < 3 * cols; ++i) {
      if (h[i] == -INFINITY) ASSERT_EQ(got.f32()[i], 0.0f) << "masked entry " << i << tag;
    }
    // Backward through those probabilities (the all -inf row stays NaN on both).
    GANTRY_ASSERT_OK(SoftmaxBackward(y.cpu, dy.cpu, dx.cpu));
    GANTRY_ASSERT_OK(SoftmaxBackward(y.gpu, dy.gpu, dx.gpu));
    ExpectNear(dx, kRtol, 1e-6, "softmax backward with -inf" + tag);
  }
}

TEST_F(GpuNorm, LayerNormForwardBackward) {
  const int64_t rows = 300, c = 256;  // 300 rows: several chunks in the dgamma/dbeta sums
  Pair x = RandomPair({3, 100, c}, 5, -3.0f, 3.0f), g = RandomPair({c}, 6), b = RandomPair({c}, 7);
  Pair y = ZeroPair({3, 100, c}), mean = ZeroPair({rows}), rstd = ZeroPair({rows});
  GANTRY_ASSERT_OK(LayerNormForward(x.cpu, g.cpu, b.cpu, 1e-5f, y.cpu, mean.cpu, rstd.cpu));
  GANTRY_ASSERT_OK(LayerNormForward(x.gpu, g.gpu, b.gpu, 1e-5f, y.gpu, mean.gpu, rstd.gpu));
  ExpectNear(y, kRtol, 1e-5, "y");
  ExpectNear(mean, kRtol, 1e-6, "mean");
  ExpectNear(rstd, kRtol, 1e-6, "rstd");
  Pair dy = RandomPair({3, 100, c}, 8), dx = ZeroPair({3, 100, c});
  Pair dg = RandomPair({c}, 9), db = RandomPair({c}, 10);
  GANTRY_ASSERT_OK(LayerNormBackward(x.cpu, g.cpu, mean.cpu, rstd.cpu, dy.cpu, dx.cpu, dg.cpu,
                                     db.cpu));
  GANTRY_ASSERT_OK(LayerNormBackward(x.gpu, g.gpu, mean.gpu, rstd.gpu, dy.gpu, dx.gpu, dg.gpu,
                                     db.gpu));
  ExpectNear(dx, 1e-4, 1e-5, "dx");
  ExpectNear(dg, 1e-4, 1e-4, "dgamma");
  ExpectNear(db, 1e-4, 1e-4, "dbeta");
}

// Both launch layouts: batch <= heads (loop over batch) and batch > heads (loop over heads).
struct AttnCase {
  int64_t batch, seq, channels;
  int heads;
};

TEST_F(GpuNorm, CausalSelfAttentionForwardBackward) {
  for (const AttnCase& k : {AttnCase{2, 17, 32, 4}, AttnCase{5, 33, 48, 2}, AttnCase{1, 128, 256, 4}}) {
    const std::string tag = " B=" + std::to_string(k.batch) + " T=" + std::to_string(k.seq) +
                            " C=" + std::to_string(k.channels) + " H=" + std::to_string(k.heads);
    const int64_t B = k.batch, T = k.seq, C = k.channels;
    Pair qkv = RandomPair({B, T, 3 * C}, 11, -2.0f, 2.0f);
    Pair out = ZeroPair({B, T, C}), att = ZeroPair({B, k.heads, T, T});
    GANTRY_ASSERT_OK(CausalSelfAttentionForward(qkv.cpu, k.heads, out.cpu, att.cpu));
    GANTRY_ASSERT_OK(CausalSelfAttentionForward(qkv.gpu, k.heads, out.gpu, att.gpu));
    ExpectNear(att, kRtol, 1e-6, "att" + tag);
    ExpectNear(out, kRtol, kAtol, "out" + tag);
    Pair dout = RandomPair({B, T, C}, 12), dqkv = RandomPair({B, T, 3 * C}, 13);
    Pair datt = ZeroPair({B, k.heads, T, T});
    GANTRY_ASSERT_OK(
        CausalSelfAttentionBackward(qkv.cpu, att.cpu, dout.cpu, k.heads, dqkv.cpu, datt.cpu));
    GANTRY_ASSERT_OK(
        CausalSelfAttentionBackward(qkv.gpu, att.gpu, dout.gpu, k.heads, dqkv.gpu, datt.gpu));
    ExpectNear(dqkv, 1e-4, 1e-5, "dqkv" + tag);
  }
}

TEST_F(GpuNorm, AttentionMaskZeroesTheUpperTriangle) {
  const int64_t B = 2, T = 9, C = 16;
  const int heads = 2;
  Pair qkv = RandomPair({B, T, 3 * C}, 14);
  Tensor out = Empty({B, T, C}, DType::kF32, Gpu());
  Tensor att = Empty({B, heads, T, T}, DType::kF32, Gpu());
  GANTRY_ASSERT_OK(CausalSelfAttentionForward(qkv.gpu, heads, out, att));
  Tensor h = ToHost(att);
  for (int64_t r = 0; r < B * heads * T; ++r) {
    const int64_t t = r % T;
    double sum = 0.0;
    for (int64_t c = 0; c < T; ++c) {
      const float p = h.f32()[r * T + c];
      if (c > t) EXPECT_EQ(p, 0.0f) << "row " << r << " col " << c;
      sum += p;
    }
    EXPECT_NEAR(sum, 1.0, 1e-5) << "row " << r;
  }
}

}  // namespace
}  // namespace gantry::kernels::gpu_test
