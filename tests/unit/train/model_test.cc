// Models: parameter counts and names (the PyTorch mapping), finite-difference gradient checks
// of the whole forward/backward of mlp, cnn and gpt, and the grad-ready callback order.
#include "train/model.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "kernels/runtime.h"
#include "tests/unit/train/train_test_util.h"

namespace gantry::train {
namespace {

using kernels::Device;
using testing::FillBatch;

std::unique_ptr<Model> MakeModel(const ModelSpec& spec, int batch, uint64_t seed = 7) {
  auto m = Model::Create(spec, batch, Device::Cpu());
  EXPECT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_TRUE((*m)->InitParams(seed).ok());
  return std::move(*m);
}

TEST(ModelTest, GptTinyHasTheReferenceParameterCount) {
  ModelSpec s;
  s.type = "gpt";
  s.vocab = 8192;
  s.context = 128;
  s.d_model = 256;
  s.layers = 4;
  s.heads = 4;
  s.mlp = 1024;
  auto m = MakeModel(s, 1);
  EXPECT_EQ(m->num_params(), 5289472);
  const auto& p = m->params();
  EXPECT_EQ(p.front().name, "wte.weight");
  EXPECT_EQ(p[1].name, "wpe.weight");
  EXPECT_EQ(p[2].name, "h.0.ln_1.weight");
  EXPECT_EQ(p[4].name, "h.0.attn.c_attn.weight");
  EXPECT_EQ(p[4].shape, (kernels::Shape{768, 256}));
  EXPECT_EQ(p.back().name, "ln_f.bias");
  ASSERT_NE(m->FindParam("h.3.mlp.c_proj.weight"), nullptr);
  EXPECT_EQ(m->FindParam("h.3.mlp.c_proj.weight")->shape, (kernels::Shape{256, 1024}));
  EXPECT_TRUE(m->FindParam("wte.weight")->decay);
  EXPECT_FALSE(m->FindParam("h.1.ln_2.weight")->decay);
  EXPECT_FALSE(m->FindParam("h.1.attn.c_attn.bias")->decay);
}

TEST(ModelTest, MlpMnistHasTheReferenceParameterCount) {
  ModelSpec s;
  s.type = "mlp";
  s.widths = {784, 512, 512, 10};
  auto m = MakeModel(s, 2);
  EXPECT_EQ(m->num_params(), 669706);
  EXPECT_EQ(m->params()[4].name, "layers.2.weight");
  EXPECT_EQ(m->params()[4].shape, (kernels::Shape{10, 512}));
}

TEST(ModelTest, CnnNamesAndHeadWidth) {
  auto m = MakeModel(testing::TinyCnn("max"), 2);
  const auto& p = m->params();
  ASSERT_EQ(p.size(), 6u);
  EXPECT_EQ(p[0].name, "convs.0.weight");
  EXPECT_EQ(p[0].shape, (kernels::Shape{3, 2, 3, 3}));
  EXPECT_EQ(p[4].name, "head.weight");
  EXPECT_EQ(p[4].shape, (kernels::Shape{5, 4 * 2 * 2}));  // 8x8 -> pool 4x4 -> pool 2x2
}

TEST(ModelTest, BadSpecsAreRejectedWithTheField) {
  ModelSpec g = testing::TinyGpt();
  g.heads = 3;
  auto m = Model::Create(g, 1, Device::Cpu());
  ASSERT_FALSE(m.ok());
  EXPECT_NE(m.status().message().find("divisible"), std::string::npos);
  ModelSpec u;
  u.type = "transformer-xl";
  EXPECT_EQ(Model::Create(u, 1, Device::Cpu()).status().code(), StatusCode::kInvalidArgument);
}

TEST(ModelTest, InitIsDeterministicPerSeed) {
  auto a = MakeModel(testing::TinyGpt(), 1, 3), b = MakeModel(testing::TinyGpt(), 1, 3);
  auto c = MakeModel(testing::TinyGpt(), 1, 4);
  const int64_t n = a->num_params();
  EXPECT_EQ(0, std::memcmp(a->flat_params().f32(), b->flat_params().f32(), n * 4));
  EXPECT_NE(0, std::memcmp(a->flat_params().f32(), c->flat_params().f32(), n * 4));
}

// Central differences of the loss against the analytic gradient for a spread of parameters.
// `eps` is small for ReLU models: a larger step crosses ReLU kinks and the difference
// quotient stops measuring the derivative (checked against torch in double precision).
void CheckGradients(const ModelSpec& spec, int batch, float eps = 1e-2f) {
  auto m = MakeModel(spec, batch);
  auto layout = BatchLayoutFor(spec, batch);
  ASSERT_TRUE(layout.ok());
  auto b = AllocateBatch(*layout, Device::Cpu());
  ASSERT_TRUE(b.ok());
  FillBatch(spec, *b, 11);
  ASSERT_TRUE(m->Forward(*b).ok());
  ASSERT_TRUE(m->Backward(*b).ok());
  std::vector<float> grad(m->flat_grads().f32(), m->flat_grads().f32() + m->num_params());
  float* w = m->flat_params().f32();
  for (const ParamInfo& p : m->params()) {
    for (int k = 0; k < 4; ++k) {
      const int64_t i = p.offset + (p.numel * k) / 4 + (k % 2);
      if (i >= p.offset + p.numel) continue;
      const float saved = w[i];
      w[i] = saved + eps;
      ASSERT_TRUE(m->Forward(*b).ok());
      const double up = *m->Loss();
      w[i] = saved - eps;
      ASSERT_TRUE(m->Forward(*b).ok());
      const double down = *m->Loss();
      w[i] = saved;
      const double numeric = (up - down) / (2 * eps);
      EXPECT_NEAR(grad[i], numeric, 2e-3 + 3e-2 * std::fabs(numeric))
          << spec.type << " " << p.name << " element " << i - p.offset;
    }
  }
}

TEST(ModelGradTest, MlpTanhCrossEntropy) { CheckGradients(testing::TinyMlp("tanh"), 3); }
TEST(ModelGradTest, MlpSigmoidMse) { CheckGradients(testing::TinyMlp("sigmoid", "mse"), 3); }
TEST(ModelGradTest, CnnAvgPool) { CheckGradients(testing::TinyCnn("avg"), 2, 1e-4f); }
TEST(ModelGradTest, CnnNoPool) { CheckGradients(testing::TinyCnn("none"), 2, 1e-4f); }
TEST(ModelGradTest, MlpRelu) { CheckGradients(testing::TinyMlp("relu"), 3, 1e-4f); }
TEST(ModelGradTest, Gpt) { CheckGradients(testing::TinyGpt(), 2); }

TEST(ModelTest, BackwardZeroesGradsSoRepeatedCallsAgree) {
  ModelSpec s = testing::TinyGpt();
  auto m = MakeModel(s, 2);
  auto b = AllocateBatch(*BatchLayoutFor(s, 2), Device::Cpu());
  FillBatch(s, *b, 5);
  ASSERT_TRUE(m->Forward(*b).ok());
  ASSERT_TRUE(m->Backward(*b).ok());
  std::vector<float> g1(m->flat_grads().f32(), m->flat_grads().f32() + m->num_params());
  ASSERT_TRUE(m->Forward(*b).ok());  // Backward consumes its Forward's saved state
  ASSERT_TRUE(m->Backward(*b).ok());
  EXPECT_EQ(0, std::memcmp(g1.data(), m->flat_grads().f32(), g1.size() * 4));
}

// An mlp whose first layer is wide enough for its weight gradient to be announced in row blocks.
ModelSpec WideMlp() {
  ModelSpec s = testing::TinyMlp("relu");
  s.widths = {24, 256, 16, 5};
  return s;
}

TEST(ModelTest, GradReadyRangesShrinkTowardsZeroAndAreFinal) {
  const int saved_threads = kernels::NumThreads();
  for (int threads : {1, 2}) {
    kernels::SetNumThreads(threads);
    for (const ModelSpec& s :
         {testing::TinyGpt(), testing::TinyMlp(), testing::TinyCnn("max"), WideMlp()}) {
      auto m = MakeModel(s, 2);
      auto b = AllocateBatch(*BatchLayoutFor(s, 2), Device::Cpu());
      FillBatch(s, *b, 5);
      ASSERT_TRUE(m->Forward(*b).ok());
      ASSERT_TRUE(m->Backward(*b).ok());
      std::vector<float> final_grads(m->flat_grads().f32(),
                                     m->flat_grads().f32() + m->num_params());
      ASSERT_TRUE(m->Forward(*b).ok());  // Backward consumes its Forward's saved state
      std::vector<int64_t> begins;
      bool stale = false;
      m->SetGradReadyCallback([&](int64_t begin) {
        // Everything from `begin` on must already equal the final gradient.
        stale |= std::memcmp(m->flat_grads().f32() + begin, final_grads.data() + begin,
                             (final_grads.size() - begin) * 4) != 0;
        begins.push_back(begin);
      });
      ASSERT_TRUE(m->Backward(*b).ok());
      ASSERT_FALSE(begins.empty()) << s.type;
      EXPECT_FALSE(stale) << s.type << " at " << threads << " thread(s)";
      EXPECT_EQ(begins.back(), 0) << s.type;
      for (size_t i = 1; i < begins.size(); ++i) EXPECT_LT(begins[i], begins[i - 1]) << s.type;
      if (s.widths.size() == 4 && s.widths[1] == 256) {
        // WideMlp: at one thread layer 0's W comes in 4 row blocks; with more threads its
        // GEMM is split across them instead and W is final all at once.
        const int64_t w0 = int64_t(s.widths[0]) * s.widths[1];
        EXPECT_EQ(std::count_if(begins.begin(), begins.end(), [&](int64_t x) { return x < w0; }),
                  threads == 1 ? 4 : 1)
            << threads << " thread(s)";
      }
    }
  }
  kernels::SetNumThreads(saved_threads);
}

TEST(ModelTest, ForwardWithoutTargetsGivesLogitsOnly) {
  ModelSpec s = testing::TinyGpt();
  auto m = MakeModel(s, 1);
  auto b = AllocateBatch(*BatchLayoutFor(s, 1), Device::Cpu());
  FillBatch(s, *b, 5);
  ASSERT_TRUE(m->Forward(*b).ok());
  std::vector<float> logits(m->Logits().f32(), m->Logits().f32() + m->Logits().numel());
  Batch no_targets{b->inputs, kernels::Tensor()};
  ASSERT_TRUE(m->Forward(no_targets).ok());
  EXPECT_EQ(0, std::memcmp(logits.data(), m->Logits().f32(), logits.size() * 4));
  EXPECT_FALSE(m->Backward(no_targets).ok());
}

// gpt computes the training logits lazily (lm_head in row blocks fused with the loss): Logits()
// after Backward and a parameter update must still be the logits of that Forward's parameters.
TEST(ModelTest, TrainingLogitsSurviveAParameterUpdate) {
  ModelSpec s = testing::TinyGpt();
  auto m = MakeModel(s, 1);
  auto b = AllocateBatch(*BatchLayoutFor(s, 1), Device::Cpu());
  FillBatch(s, *b, 7);
  float* p = m->flat_params().f32();
  std::vector<float> before(p, p + m->num_params());
  ASSERT_TRUE(m->Forward(*b).ok());
  ASSERT_TRUE(m->Backward(*b).ok());
  for (int64_t i = 0; i < m->num_params(); ++i) p[i] += 0.05f;  // an "optimizer step"
  std::vector<float> lazy(m->Logits().f32(), m->Logits().f32() + m->Logits().numel());
  std::memcpy(p, before.data(), before.size() * 4);
  Batch no_targets{b->inputs, kernels::Tensor()};
  ASSERT_TRUE(m->Forward(no_targets).ok());
  ASSERT_EQ(lazy.size(), size_t(m->Logits().numel()));
  EXPECT_EQ(0, std::memcmp(lazy.data(), m->Logits().f32(), lazy.size() * 4));
}

}  // namespace
}  // namespace gantry::train
