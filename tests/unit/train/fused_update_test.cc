// Update in backward (Optimizer::BeginStepInBackward/EndStepInBackward, and the Trainer's
// GANTRY_FUSED_UPDATE path) gives byte-identical parameters and state to Backward + Step.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "tests/unit/train/train_test_util.h"
#include "train/optimizer.h"
#include "train/trainer.h"

namespace gantry::train {
namespace {

using testing::TempDir;

struct Case {
  const char* model;
  const char* optimizer;
};

class FusedUpdateTest : public ::testing::TestWithParam<Case> {};

ModelSpec SpecFor(const std::string& name) {
  if (name == "gpt") return testing::TinyGpt(40, 8);
  if (name == "cnn") return testing::TinyCnn();
  return testing::TinyMlp("relu");
}

bool SameBytes(const kernels::Tensor& a, const kernels::Tensor& b) {
  return a.numel() == b.numel() && std::memcmp(a.raw(), b.raw(), a.numel() * 4) == 0;
}

TEST_P(FusedUpdateTest, SameBitsAsBackwardThenStep) {
  const ModelSpec spec = SpecFor(GetParam().model);
  OptimizerSpec o;
  o.type = GetParam().optimizer;
  o.lr = 0.01;
  o.momentum = 0.9;
  o.weight_decay = 0.05;
  auto plain = Model::Create(spec, 3, kernels::Device::Cpu()).value();
  auto fused = Model::Create(spec, 3, kernels::Device::Cpu()).value();
  ASSERT_TRUE(plain->InitParams(4).ok() && fused->InitParams(4).ok());
  const std::vector<float> init(plain->flat_params().f32(),
                                plain->flat_params().f32() + plain->num_params());
  auto opt_plain = Optimizer::Create(o, *plain).value();
  auto opt_fused = Optimizer::Create(o, *fused).value();
  Batch b = AllocateBatch(BatchLayoutFor(spec, 3).value(), kernels::Device::Cpu()).value();
  int ranges = 0;
  for (int step = 0; step < 4; ++step) {
    testing::FillBatch(spec, b, 100 + step);
    ASSERT_TRUE(plain->Forward(b).ok() && plain->Backward(b).ok());
    const float norm = opt_plain->ClipGradients().value();
    ASSERT_TRUE(opt_plain->Step(step, 0.01f).ok());
    ASSERT_TRUE(fused->Forward(b).ok());
    ASSERT_TRUE(opt_fused->BeginStepInBackward(step, 0.01f).ok());
    ASSERT_TRUE(fused->Backward(b).ok());
    StatusOr<float> fused_norm = opt_fused->EndStepInBackward();
    ASSERT_TRUE(fused_norm.ok()) << fused_norm.status().ToString();
    EXPECT_NEAR(*fused_norm, norm, 1e-5f * norm);
    ranges = 0;  // the callback is gone after End: a plain Backward must not update
    fused->SetGradReadyCallback([&](int64_t) { ++ranges; });
    ASSERT_TRUE(fused->Backward(b).ok());
    fused->SetGradReadyCallback(nullptr);
    ASSERT_TRUE(fused->Forward(b).ok());  // (params only change through the optimizer)
  }
  EXPECT_GE(ranges, 2) << "backward reported the gradient buffer in one piece";
  EXPECT_TRUE(SameBytes(plain->flat_params(), fused->flat_params()));
  for (size_t i = 0; i < opt_plain->state().size(); ++i) {
    EXPECT_TRUE(SameBytes(opt_plain->state()[i].second, opt_fused->state()[i].second))
        << opt_plain->state()[i].first;
  }
  EXPECT_NE(std::memcmp(init.data(), plain->flat_params().raw(), init.size() * 4), 0);
}

INSTANTIATE_TEST_SUITE_P(
    ModelsAndOptimizers, FusedUpdateTest,
    ::testing::Values(Case{"mlp", "momentum"}, Case{"mlp", "sgd"}, Case{"mlp", "adam"},
                      Case{"gpt", "adamw"}, Case{"gpt", "momentum"}, Case{"cnn", "adamw"}),
    [](const auto& info) {
      return std::string(info.param.model) + "_" + info.param.optimizer;
    });

TEST(FusedUpdateTest, RefusesWithClipping) {
  auto m = Model::Create(testing::TinyMlp(), 2, kernels::Device::Cpu()).value();
  OptimizerSpec o;
  o.grad_clip = 1.0;
  auto opt = Optimizer::Create(o, *m).value();
  Status st = opt->BeginStepInBackward(0, 0.1f);
  EXPECT_EQ(st.code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(st.message().find("grad_clip"), std::string::npos) << st.message();
}

// The Trainer with GANTRY_FUSED_UPDATE=1 (default) and =0: same parameters after a few steps.
std::vector<float> TrainParams(const std::string& fused, const TempDir& dir) {
  ::setenv("GANTRY_FUSED_UPDATE", fused.c_str(), 1);
  JobSpec j;
  j.name = "unit-fused";
  j.model = testing::TinyGpt(32, 8);
  j.data.batch_per_rank = 4;
  j.data.synthetic_samples = 64;
  j.data.seed = 3;
  j.optimizer.type = "adamw";
  j.optimizer.lr = 1e-2;
  j.optimizer.weight_decay = 0.01;
  j.optimizer.warmup_steps = 2;
  j.optimizer.schedule = "cosine";
  j.train.steps = 6;
  j.train.threads = 1;
  TrainerOptions opts;
  opts.checkpoint_dir = dir / ("ckpt" + fused);
  auto t = Trainer::Create(j, opts);
  EXPECT_TRUE(t.ok()) << t.status().ToString();
  if (!t.ok()) return {};
  Status st = (*t)->Run();
  ::unsetenv("GANTRY_FUSED_UPDATE");
  EXPECT_TRUE(st.ok()) << st.ToString();
  const kernels::Tensor& p = (*t)->model().flat_params();
  return std::vector<float>(p.f32(), p.f32() + p.numel());
}

TEST(FusedUpdateTest, TrainerSwitchGivesSameBytes) {
  TempDir dir;
  const std::vector<float> on = TrainParams("1", dir), off = TrainParams("0", dir);
  ASSERT_EQ(on.size(), off.size());
  ASSERT_FALSE(on.empty());
  EXPECT_EQ(std::memcmp(on.data(), off.data(), on.size() * 4), 0);
}

}  // namespace
}  // namespace gantry::train
