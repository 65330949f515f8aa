// CUDA vs CPU for embeddings, losses and optimizers: embedding forward/backward with repeated
// tokens, bad tokens/targets (and an empty vocabulary) reported (deferred) as kInvalidArgument, cross-entropy/MSE/hinge
// forward (device [1] loss) and backward, SGD/Adam/AdamW over several steps, L2 norm and
// gradient clipping. Skips without a GPU.
#include <gtest/gtest.h>

#include <cstring>

#include <cmath>
#include <string>

#include "kernels/embedding.h"
#include "kernels/loss.h"
#include "kernels/optim.h"
#include "tests/gpu/gpu_test_util.h"

namespace gantry::kernels::gpu_test {
namespace {

using GpuLossOptim = GpuTest;

TEST_F(GpuLossOptim, EmbeddingForwardBackward) {
  const int64_t B = 4, T = 16, V = 11, C = 24;  // V small: tokens repeat, atomics collide
  Pair tok = IndexPair({B, T}, V, 1);
  Pair wte = RandomPair({V, C}, 2), wpe = RandomPair({T + 3, C}, 3);
  Pair out = ZeroPair({B, T, C});
  GANTRY_ASSERT_OK(EmbeddingForward(tok.cpu, wte.cpu, &wpe.cpu, out.cpu));
  GANTRY_ASSERT_OK(EmbeddingForward(tok.gpu, wte.gpu, &wpe.gpu, out.gpu));
  ExpectNear(out, kRtol, kAtol, "out");
  GANTRY_ASSERT_OK(EmbeddingForward(tok.cpu, wte.cpu, nullptr, out.cpu));
  GANTRY_ASSERT_OK(EmbeddingForward(tok.gpu, wte.gpu, nullptr, out.gpu));
  ExpectNear(out, kRtol, kAtol, "out without wpe");
  Pair dout = RandomPair({B, T, C}, 4), dwte = RandomPair({V, C}, 5), dwpe = RandomPair({T + 3, C}, 6);
  GANTRY_ASSERT_OK(EmbeddingBackward(tok.cpu, dout.cpu, dwte.cpu, &dwpe.cpu));
  GANTRY_ASSERT_OK(EmbeddingBackward(tok.gpu, dout.gpu, dwte.gpu, &dwpe.gpu));
  ExpectNear(dwte, kRtol, 1e-5, "dwte");
  ExpectNear(dwpe, kRtol, 1e-5, "dwpe");
}

// dwte sums each token's rows in position order (sorted, no atomics): two runs on the same
// input give the same bits, with many repeats of a few tokens and a vocabulary that needs
// more than 8 sort bits; a bad token in backward is reported and its row skipped.
TEST_F(GpuLossOptim, EmbeddingBackwardIsDeterministic) {
  const int64_t B = 8, T = 512, V = 3001, C = 40;
  Pair tok = IndexPair({B, T}, 5, 11);  // tokens 0..4 only: long runs
  for (int64_t i = 0; i < B * T; i += 7) tok.cpu.i32()[i] = int32_t((i * 37) % V);
  tok = MakePair(tok.cpu);
  Pair dout = RandomPair({B, T, C}, 12);
  Tensor first, second;
  for (Tensor* t : {&first, &second}) {
    Pair dwte = ZeroPair({V, C});
    GANTRY_ASSERT_OK(EmbeddingBackward(tok.gpu, dout.gpu, dwte.gpu, nullptr));
    GANTRY_ASSERT_OK(EmbeddingBackward(tok.cpu, dout.cpu, dwte.cpu, nullptr));
    ExpectNear(dwte, kRtol, 1e-4, "dwte with long runs");
    *t = ToHost(dwte.gpu);
  }
  EXPECT_EQ(0, std::memcmp(first.f32(), second.f32(), size_t(first.numel()) * 4))
      << "EmbeddingBackward on CUDA is not deterministic";

  Pair bad = IndexPair({2, 5}, 7, 13);
  bad.cpu.i32()[3] = -4;
  bad = MakePair(bad.cpu);
  Pair d = RandomPair({2, 5, 8}, 14);
  Tensor dw = Empty({7, 8}, DType::kF32, Gpu());
  GANTRY_ASSERT_OK(Zero(dw));
  Status s = EmbeddingBackward(bad.gpu, d.gpu, dw, nullptr);
  if (s.ok()) s = Synchronize(Gpu());
  ASSERT_EQ(s.code(), StatusCode::kInvalidArgument) << s.ToString();
  EXPECT_NE(s.message().find("position 3"), std::string::npos) << s.message();
}

TEST_F(GpuLossOptim, BadTokenIsReportedWithItsPosition) {
  BadTokenEmbedding e = EmbedWithBadToken(6, 99);  // kept until the op has run
  Status s = e.status;
  if (s.ok()) s = Synchronize(Gpu());  // the device finds it; Synchronize reports it
  ASSERT_EQ(s.code(), StatusCode::kInvalidArgument) << s.ToString();
  EXPECT_NE(s.message().find("99"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("position 6"), std::string::npos) << s.message();
  GANTRY_EXPECT_OK(Synchronize(Gpu()));  // reported once, then cleared
}

// An empty table (V = 0): every token is out of range. The CPU refuses it at once, CUDA
// reports it deferred (its radix sort still needs a key bit: no __builtin_clzll(0)).
TEST_F(GpuLossOptim, EmptyVocabularyReportsTheTokens) {
  Pair tok = IndexPair({2, 3}, 1, 20);  // all 0
  Pair dout = RandomPair({2, 3, 4}, 21), dwte = ZeroPair({0, 4});
  const Status cpu = EmbeddingBackward(tok.cpu, dout.cpu, dwte.cpu, nullptr);
  EXPECT_EQ(cpu.code(), StatusCode::kInvalidArgument) << cpu.ToString();
  Status s = EmbeddingBackward(tok.gpu, dout.gpu, dwte.gpu, nullptr);
  if (s.ok()) s = Synchronize(Gpu());
  ASSERT_EQ(s.code(), StatusCode::kInvalidArgument) << s.ToString();
  // Every position is bad; which one the device records first is not fixed.
  EXPECT_NE(s.message().find("EmbeddingBackward"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("outside [0, 0)"), std::string::npos) << s.message();
}

TEST_F(GpuLossOptim, CrossEntropyForwardBackward) {
  const int64_t N = 300, V = 1000;
  Pair logits = RandomPair({3, 100, V}, 9, -5.0f, 5.0f), tg = IndexPair({3, 100}, V, 10);
  Pair probs = ZeroPair({3, 100, V}), loss = ZeroPair({1});
  GANTRY_ASSERT_OK(CrossEntropyForward(logits.cpu, tg.cpu, probs.cpu, loss.cpu));
  GANTRY_ASSERT_OK(CrossEntropyForward(logits.gpu, tg.gpu, probs.gpu, loss.gpu));
  ExpectNear(probs, kRtol, 1e-8, "probs");
  ExpectNear(loss, kRtol, kAtol, "loss");
  EXPECT_GT(loss.cpu.f32()[0], 0.0f);
  Pair dl = ZeroPair({N, V});
  GANTRY_ASSERT_OK(CrossEntropyBackward(probs.cpu, tg.cpu, 0.5f, dl.cpu));
  GANTRY_ASSERT_OK(CrossEntropyBackward(probs.gpu, tg.gpu, 0.5f, dl.gpu));
  ExpectNear(dl, kRtol, 1e-9, "dlogits");
}

TEST_F(GpuLossOptim, CrossEntropyBadTargetIsReported) {
  Pair logits = RandomPair({4, 6}, 11), tg = IndexPair({4}, 6, 12);
  tg.cpu.i32()[2] = -1;
  tg = MakePair(tg.cpu);
  Tensor probs = Empty({4, 6}, DType::kF32, Gpu()), loss = Empty({1}, DType::kF32, Gpu());
  Status s = CrossEntropyForward(logits.gpu, tg.gpu, probs, loss);
  if (s.ok()) s = Synchronize(Gpu());
  ASSERT_EQ(s.code(), StatusCode::kInvalidArgument) << s.ToString();
  EXPECT_TRUE(std::isnan(ToHost(loss).f32()[0]));
}

TEST_F(GpuLossOptim, MseForwardBackward) {
  Pair p = RandomPair({64, 33}, 13), t = RandomPair({64, 33}, 14);
  Pair loss = ZeroPair({1}), dp = ZeroPair({64, 33});
  GANTRY_ASSERT_OK(MseForward(p.cpu, t.cpu, loss.cpu));
  GANTRY_ASSERT_OK(MseForward(p.gpu, t.gpu, loss.gpu));
  ExpectNear(loss, kRtol, kAtol, "mse");
  GANTRY_ASSERT_OK(MseBackward(p.cpu, t.cpu, 2.0f, dp.cpu));
  GANTRY_ASSERT_OK(MseBackward(p.gpu, t.gpu, 2.0f, dp.gpu));
  ExpectNear(dp, kRtol, 1e-8, "dpred");
}

TEST_F(GpuLossOptim, HingeForwardBackward) {
  Pair s = RandomPair({50, 10}, 15, -1.5f, 1.5f), tg = IndexPair({50}, 10, 16);
  Pair loss = ZeroPair({1}), ds = ZeroPair({50, 10});
  GANTRY_ASSERT_OK(HingeForward(s.cpu, tg.cpu, loss.cpu));
  GANTRY_ASSERT_OK(HingeForward(s.gpu, tg.gpu, loss.gpu));
  ExpectNear(loss, kRtol, kAtol, "hinge");
  GANTRY_ASSERT_OK(HingeBackward(s.cpu, tg.cpu, 1.0f, ds.cpu));
  GANTRY_ASSERT_OK(HingeBackward(s.gpu, tg.gpu, 1.0f, ds.gpu));
  ExpectNear(ds, kRtol, 1e-8, "dscores");
}

TEST_F(GpuLossOptim, SgdVariantsOverSteps) {
  const SgdOptions variants[] = {{0.1f, 0.0f, 0.0f, false}, {0.05f, 0.9f, 1e-2f, false},
                                 {0.05f, 0.9f, 1e-2f, true}};
  for (const SgdOptions& o : variants) {
    Pair p = RandomPair({4099}, 17), buf = ZeroPair({4099});
    for (int step = 0; step < 5; ++step) {
      Pair g = RandomPair({4099}, 100 + step);
      GANTRY_ASSERT_OK(SgdUpdate(p.cpu, g.cpu, &buf.cpu, o));
      GANTRY_ASSERT_OK(SgdUpdate(p.gpu, g.gpu, &buf.gpu, o));
    }
    const std::string tag = " momentum=" + std::to_string(o.momentum) +
                            " nesterov=" + std::to_string(o.nesterov);
    ExpectNear(p, kRtol, 1e-6, "param" + tag);
    ExpectNear(buf, kRtol, 1e-6, "momentum" + tag);
  }
}

TEST_F(GpuLossOptim, AdamAndAdamWOverSteps) {
  for (bool decoupled : {false, true}) {
    AdamOptions o;
    o.lr = 3e-3f;
    o.weight_decay = 0.01f;
    o.decoupled_weight_decay = decoupled;
    Pair p = RandomPair({5003}, 18), m = ZeroPair({5003}), v = ZeroPair({5003});
    for (int step = 1; step <= 10; ++step) {
      o.step = step;
      Pair g = RandomPair({5003}, 200 + step);
      GANTRY_ASSERT_OK(AdamUpdate(p.cpu, g.cpu, m.cpu, v.cpu, o));
      GANTRY_ASSERT_OK(AdamUpdate(p.gpu, g.gpu, m.gpu, v.gpu, o));
    }
    const std::string tag = decoupled ? " adamw" : " adam";
    ExpectNear(p, kRtol, 1e-6, "param" + tag);
    ExpectNear(m, kRtol, 1e-7, "m" + tag);
    ExpectNear(v, kRtol, 1e-8, "v" + tag);
  }
}

TEST_F(GpuLossOptim, L2NormAndClip) {
  Pair g = RandomPair({1 << 20}, 19);
  StatusOr<float> cpu_norm = L2Norm(g.cpu), gpu_norm = L2Norm(g.gpu);
  ASSERT_TRUE(cpu_norm.ok() && gpu_norm.ok()) << gpu_norm.status().ToString();
  EXPECT_NEAR(*gpu_norm, *cpu_norm, 1e-5 * *cpu_norm);
  StatusOr<float> cpu_clip = ClipGradNorm(g.cpu, 1.0f), gpu_clip = ClipGradNorm(g.gpu, 1.0f);
  ASSERT_TRUE(cpu_clip.ok() && gpu_clip.ok()) << gpu_clip.status().ToString();
  EXPECT_NEAR(*gpu_clip, *cpu_clip, 1e-5 * *cpu_clip);
  ExpectNear(g, kRtol, 1e-9, "clipped grad");
  StatusOr<float> after = L2Norm(g.gpu);
  ASSERT_TRUE(after.ok());
  EXPECT_NEAR(*after, 1.0f, 1e-4f);
}

}  // namespace
}  // namespace gantry::kernels::gpu_test
