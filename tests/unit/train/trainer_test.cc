// Optimizer and Trainer: LR schedule, decay groups, the loss falls, resume is bitwise
// identical to an uninterrupted run, NaN stops with the step, and unsafe resumes refuse.
#include "train/trainer.h"

#include <gtest/gtest.h>

#include "base/logging.h"

#include "kernels/cpu/cpu_ops.h"
#include "kernels/runtime.h"

#include <cmath>
#include <cstring>
#include <filesystem>
#include <vector>

#include "tests/unit/train/train_test_util.h"
#include "train/optimizer.h"

namespace gantry::train {
namespace {

namespace fs = std::filesystem;
using testing::ReadFile;
using testing::TempDir;
using testing::WriteFile;

TEST(OptimizerTest, WarmupThenCosineToTheFloor) {
  OptimizerSpec o;
  o.lr = 1.0;
  o.warmup_steps = 4;
  o.schedule = "cosine";
  o.min_lr_ratio = 0.1;
  EXPECT_DOUBLE_EQ(ScheduledLearningRate(o, 0, 104), 0.25);
  EXPECT_DOUBLE_EQ(ScheduledLearningRate(o, 3, 104), 1.0);
  EXPECT_DOUBLE_EQ(ScheduledLearningRate(o, 4, 104), 1.0);
  EXPECT_NEAR(ScheduledLearningRate(o, 54, 104), 0.55, 1e-12);
  EXPECT_NEAR(ScheduledLearningRate(o, 104, 104), 0.1, 1e-12);
  o.schedule = "constant";
  EXPECT_DOUBLE_EQ(ScheduledLearningRate(o, 90, 104), 1.0);
}

TEST(OptimizerTest, WeightDecayOnlyTouchesDecayParams) {
  auto m = Model::Create(testing::TinyMlp(), 2, kernels::Device::Cpu()).value();
  ASSERT_TRUE(m->InitParams(1).ok());
  std::vector<float> before(m->flat_params().f32(), m->flat_params().f32() + m->num_params());
  OptimizerSpec o;
  o.type = "adamw";
  o.weight_decay = 0.5;
  auto opt = Optimizer::Create(o, *m);
  ASSERT_TRUE(opt.ok());
  ASSERT_TRUE(kernels::Zero(m->flat_grads()).ok());  // zero grads: only decay moves params
  ASSERT_TRUE((*opt)->Step(0, 0.1f).ok());
  for (const ParamInfo& p : m->params()) {
    const float* now = m->flat_params().f32() + p.offset;
    const float factor = p.decay ? 1.0f - 0.1f * 0.5f : 1.0f;
    for (int64_t i = 0; i < p.numel; ++i) {
      ASSERT_FLOAT_EQ(now[i], before[p.offset + i] * factor) << p.name;
    }
  }
  EXPECT_EQ((*opt)->state().size(), 2u);
  o.type = "lion";
  EXPECT_EQ(Optimizer::Create(o, *m).status().code(), StatusCode::kInvalidArgument);
}

// A tiny byte-level gpt job on a repetitive text file.
JobSpec TextJob(const TempDir& dir, int64_t steps) {
  std::string text;
  for (int i = 0; i < 40; ++i) text += "the quick brown fox jumps over the lazy dog. ";
  WriteFile(dir / "text.txt", text);
  JobSpec j;
  j.name = "unit-gpt";
  j.model = testing::TinyGpt(256, 16);
  j.data.uri = dir / "text.txt";
  j.data.batch_per_rank = 4;
  j.data.seed = 5;
  j.optimizer.type = "adamw";
  j.optimizer.lr = 1e-2;
  j.optimizer.weight_decay = 0.01;
  j.optimizer.warmup_steps = 3;
  j.optimizer.schedule = "cosine";
  j.optimizer.grad_clip = 1.0;
  j.train.steps = steps;
  j.train.checkpoint_every = 5;
  j.train.keep_last = 2;
  j.train.log_every = 5;
  j.train.threads = 1;
  return j;
}

struct RunResult {
  Status status;
  std::vector<float> losses;
};

RunResult Train(const JobSpec& job, const std::string& ckpt, TrainerOptions o = {}) {
  o.checkpoint_dir = ckpt;
  RunResult r;
  auto t = Trainer::Create(job, o);
  if (!t.ok()) return {t.status(), {}};
  (*t)->SetStepCallback([&](const StepMetrics& m) { r.losses.push_back(m.loss); });
  r.status = (*t)->Run();
  return r;
}

TEST(TrainerTest, LossFallsOnATinyTextTask) {
  TempDir dir;
  RunResult r = Train(TextJob(dir, 60), dir / "ckpt");
  ASSERT_TRUE(r.status.ok()) << r.status.ToString();
  ASSERT_EQ(r.losses.size(), 60u);
  EXPECT_GT(r.losses.front(), 4.0f);  // ~ln(256) at init
  EXPECT_LT(r.losses.back(), 0.5f * r.losses.front());
}

TEST(TrainerTest, MlpOnSyntheticDataLearns) {
  TempDir dir;
  JobSpec j;
  j.name = "unit-mlp";
  j.model = testing::TinyMlp("relu");
  j.model.widths = {20, 32, 4};
  j.data.batch_per_rank = 32;
  j.data.synthetic_samples = 256;
  j.optimizer.type = "momentum";
  j.optimizer.lr = 0.1;
  j.train.steps = 120;
  RunResult r = Train(j, dir / "ckpt");
  ASSERT_TRUE(r.status.ok()) << r.status.ToString();
  float first = 0, last = 0;
  for (int i = 0; i < 10; ++i) {
    first += r.losses[i];
    last += r.losses[r.losses.size() - 1 - i];
  }
  EXPECT_LT(last, 0.8f * first);
}

TEST(TrainerTest, ResumeIsBitwiseIdenticalToAnUninterruptedRun) {
  TempDir dir;
  const JobSpec job = TextJob(dir, 20);
  RunResult full = Train(job, dir / "full");
  ASSERT_TRUE(full.status.ok()) << full.status.ToString();
  TrainerOptions stop;
  stop.stop_after = 12;  // not a checkpoint_every multiple: the stop writes its own checkpoint
  RunResult first = Train(job, dir / "split", stop);
  ASSERT_TRUE(first.status.ok()) << first.status.ToString();
  ASSERT_EQ(first.losses.size(), 12u);
  RunResult rest = Train(job, dir / "split");
  ASSERT_TRUE(rest.status.ok()) << rest.status.ToString();
  ASSERT_EQ(rest.losses.size(), 8u);
  std::vector<float> joined = first.losses;
  joined.insert(joined.end(), rest.losses.begin(), rest.losses.end());
  ASSERT_EQ(joined.size(), full.losses.size());
  EXPECT_EQ(0, std::memcmp(joined.data(), full.losses.data(), joined.size() * 4));
  for (const char* f : {"ckpt-000020/data.bin", "ckpt-000020/manifest.json", "latest"}) {
    const std::string a = ReadFile(dir / ("full/" + std::string(f)));
    EXPECT_FALSE(a.empty()) << f;
    EXPECT_TRUE(a == ReadFile(dir / ("split/" + std::string(f)))) << f << " differs";
  }
  // Running again resumes at the end: no steps, nothing rewritten.
  RunResult again = Train(job, dir / "split");
  ASSERT_TRUE(again.status.ok());
  EXPECT_TRUE(again.losses.empty());
}

// The text task's products are all small: while it lives, every one goes through bf16
// (default: >= 4 MFLOP, GANTRY_BF16_MIN_FLOPS).
struct AllProductsInBf16 {
  AllProductsInBf16() { setenv("GANTRY_BF16_MIN_FLOPS", "0", 1); }
  ~AllProductsInBf16() { unsetenv("GANTRY_BF16_MIN_FLOPS"); }
};

// train.precision bf16: the loss curve of the text task stays close to f32's (matmuls on
// bf16-rounded inputs, f32 accumulation; everything else f32), it still learns, and a resumed
// bf16 run is byte-identical to an uninterrupted one (the bf16 kernels are deterministic).
TEST(TrainerTest, Bf16PrecisionTracksF32AndResumesExactly) {
  TempDir dir;
  const AllProductsInBf16 all_bf16;
  JobSpec f32 = TextJob(dir, 30), bf16 = f32;
  bf16.train.precision = "bf16";
  RunResult a = Train(f32, dir / "f32");
  RunResult b = Train(bf16, dir / "bf16");
  ASSERT_TRUE(a.status.ok() && b.status.ok()) << a.status.ToString() << b.status.ToString();
  ASSERT_EQ(a.losses.size(), b.losses.size());
  EXPECT_NE(0, std::memcmp(a.losses.data(), b.losses.data(), a.losses.size() * 4))
      << "bf16 gave the f32 bits: were the matmuls run in bf16 at all?";
  for (size_t i = 0; i < a.losses.size(); ++i) {
    EXPECT_NEAR(b.losses[i], a.losses[i], 0.03f * a.losses[i]) << "step " << i + 1;
  }
  EXPECT_LT(b.losses.back(), 0.6f * b.losses.front());
  TrainerOptions stop;
  stop.stop_after = 13;
  ASSERT_TRUE(Train(bf16, dir / "split", stop).status.ok());
  ASSERT_TRUE(Train(bf16, dir / "split").status.ok());
  EXPECT_TRUE(ReadFile(dir / "bf16/ckpt-000030/data.bin") ==
              ReadFile(dir / "split/ckpt-000030/data.bin"));
  // Later jobs in this process are f32 again unless they ask.
  ASSERT_TRUE(Train(f32, dir / "f32-again").status.ok());
  EXPECT_EQ(kernels::CpuMatmulPrecision(), kernels::MatmulPrecision::kF32);
}

// bf16: the optimizer's bf16 copy of the parameters (kernels/runtime.h) must not outlive a
// load. A trainer that steps, restores an older checkpoint and steps again computes exactly
// what a fresh trainer restoring that checkpoint computes (a stale copy would run the step on
// the newer weights), and a trainer that goes away leaves no parameter range registered.
TEST(TrainerTest, Bf16RestoreAfterStepsReadsTheRestoredWeights) {
  TempDir dir;
  const AllProductsInBf16 all_bf16;
  JobSpec job = TextJob(dir, 20);
  job.train.precision = "bf16";
  job.optimizer.grad_clip = 0;  // the update runs inside backward, range by range
  TrainerOptions stop;
  stop.stop_after = 10;
  ASSERT_TRUE(Train(job, dir / "ck", stop).status.ok());  // checkpoints at steps 5 and 10
  TrainerOptions o;
  o.checkpoint_dir = dir / "ck";
  auto step_after_restore = [&](int steps_before) {
    auto t = Trainer::Create(job, o);
    EXPECT_TRUE(t.ok()) << t.status().ToString();
    StepMetrics m;
    for (int i = 0; i < steps_before; ++i) EXPECT_TRUE((*t)->TrainStep(&m).ok());
    StatusOr<bool> restored = (*t)->Restore();
    EXPECT_TRUE(restored.ok() && *restored) << restored.status().ToString();
    EXPECT_EQ((*t)->step(), 10);
    EXPECT_TRUE((*t)->TrainStep(&m).ok());
    const kernels::Tensor& p = (*t)->model().flat_params();
    std::vector<float> params(p.f32(), p.f32() + p.numel());
    params.push_back(m.loss);
    const void* range = p.raw();
    t->reset();
    EXPECT_EQ(kernels::cpu::MatmulWeightsOf(range, 4).epoch, 0u)
        << "the destroyed trainer's parameters are still registered";
    return params;
  };
  const std::vector<float> fresh = step_after_restore(0);
  const std::vector<float> after_steps = step_after_restore(3);
  ASSERT_EQ(fresh.size(), after_steps.size());
  EXPECT_EQ(std::memcmp(fresh.data(), after_steps.data(), fresh.size() * sizeof(float)), 0)
      << "step 11 after a restore differs from a fresh restore's (loss " << after_steps.back()
      << " vs " << fresh.back() << ")";
  (void)kernels::SetCpuMatmulPrecision(kernels::MatmulPrecision::kF32);
}

TEST(TrainerTest, NanLossStopsWithTheStepAndSavesNothingNew) {
  TempDir dir;
  JobSpec j = TextJob(dir, 40);
  j.optimizer.type = "sgd";
  j.optimizer.lr = 1e12;
  j.optimizer.warmup_steps = 0;
  j.optimizer.grad_clip = 0;
  j.train.checkpoint_every = 1;
  j.train.keep_last = 100;
  RunResult r = Train(j, dir / "ckpt");
  ASSERT_EQ(r.status.code(), StatusCode::kAborted) << r.status.ToString();
  const int64_t bad_step = int64_t(r.losses.size()) + 1;
  EXPECT_NE(r.status.message().find("at step " + std::to_string(bad_step)), std::string::npos)
      << r.status.message();
  EXPECT_FALSE(fs::exists(dir / ("ckpt/" + CheckpointName(bad_step))));
}

TEST(TrainerTest, NoResumeRefusesToOverwriteCheckpoints) {
  TempDir dir;
  JobSpec j = TextJob(dir, 5);
  ASSERT_TRUE(Train(j, dir / "ckpt").status.ok());
  const std::string before = ReadFile(dir / "ckpt/ckpt-000005/data.bin");
  TrainerOptions o;
  o.resume = false;
  RunResult r = Train(j, dir / "ckpt", o);
  EXPECT_EQ(r.status.code(), StatusCode::kFailedPrecondition);
  EXPECT_TRUE(r.losses.empty());
  EXPECT_EQ(before, ReadFile(dir / "ckpt/ckpt-000005/data.bin"));
}

TEST(TrainerTest, CheckpointOfAnotherModelIsRefused) {
  TempDir dir;
  JobSpec j = TextJob(dir, 5);
  ASSERT_TRUE(Train(j, dir / "ckpt").status.ok());
  j.model.d_model = 32;
  RunResult r = Train(j, dir / "ckpt");
  EXPECT_EQ(r.status.code(), StatusCode::kFailedPrecondition) << r.status.ToString();
}

// A resume with another data seed or batch size trains on (the user may mean it), but it
// cannot reproduce the uninterrupted run: a warning names each setting and both values. The
// same settings resume silently.
TEST(TrainerTest, ResumeWithOtherDataSettingsWarnsNamingThem) {
  TempDir dir;
  JobSpec j = TextJob(dir, 10);
  TrainerOptions stop;
  stop.stop_after = 5;
  ASSERT_TRUE(Train(j, dir / "ckpt", stop).status.ok());
  std::vector<std::string> warnings;
  SetLogSink([&](std::string_view line) {
    if (line.find("other data settings") != std::string_view::npos) warnings.emplace_back(line);
  });
  j.train.steps = 7;
  RunResult same = Train(j, dir / "ckpt");
  EXPECT_TRUE(same.status.ok()) << same.status.ToString();
  EXPECT_TRUE(warnings.empty()) << warnings[0];
  j.train.steps = 10;
  j.data.seed = 6;
  j.data.batch_per_rank = 2;
  RunResult other = Train(j, dir / "ckpt");
  SetLogSink(nullptr);
  EXPECT_TRUE(other.status.ok()) << other.status.ToString();
  EXPECT_EQ(other.losses.size(), 3u);
  ASSERT_EQ(warnings.size(), 2u);
  EXPECT_NE(warnings[0].find("\"setting\":\"data.seed\""), std::string::npos) << warnings[0];
  EXPECT_NE(warnings[0].find("\"checkpoint_value\":\"5\""), std::string::npos) << warnings[0];
  EXPECT_NE(warnings[0].find("\"value\":\"6\""), std::string::npos) << warnings[0];
  EXPECT_NE(warnings[1].find("data.batch_per_rank"), std::string::npos) << warnings[1];
}

TEST(TrainerTest, CorruptLatestFallsBackToThePreviousCheckpoint) {
  TempDir dir;
  JobSpec j = TextJob(dir, 10);
  RunResult full = Train(j, dir / "ckpt");
  ASSERT_TRUE(full.status.ok());
  std::string data = ReadFile(dir / "ckpt/ckpt-000010/data.bin");
  data[100] ^= 1;
  WriteFile(dir / "ckpt/ckpt-000010/data.bin", data);
  j.train.steps = 10;
  RunResult r = Train(j, dir / "ckpt");  // resumes at 5 and redoes 6..10
  ASSERT_TRUE(r.status.ok()) << r.status.ToString();
  ASSERT_EQ(r.losses.size(), 5u);
  EXPECT_EQ(0, std::memcmp(r.losses.data(), full.losses.data() + 5, 5 * 4));
}

}  // namespace
}  // namespace gantry::train
