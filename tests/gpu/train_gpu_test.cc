// Training on a GPU end to end (label gpu; skips without one): the Trainer with
// train.device cuda:0 follows the CPU run of the same job (mlp, cnn, gpt) within f32 tolerance,
// a run stopped and resumed on the GPU is byte-identical to an uninterrupted one (f32 and
// bf16), and a GPU checkpoint resumes on the CPU. Built by scripts/gpu-check.sh when yaml-cpp is at hand there
// (scripts/gpu-prepare.sh ships it) and by every CUDA build here.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "kernels/runtime.h"
#include "kernels/tensor.h"
#include "tests/unit/train/train_test_util.h"
#include "train/trainer.h"

namespace gantry::train {
namespace {

using testing::ReadFile;
using testing::TempDir;
using testing::WriteFile;

#define SKIP_WITHOUT_GPU() \
  if (kernels::CudaDeviceCount() == 0) GTEST_SKIP() << "no CUDA device"

JobSpec BaseJob(const TempDir& dir, const std::string& type, int64_t steps) {
  JobSpec j;
  j.name = "gpu-" + type;
  j.data.batch_per_rank = 16;
  j.data.seed = 3;
  j.optimizer.type = "adamw";
  j.optimizer.lr = 3e-3;
  j.optimizer.weight_decay = 0.01;
  j.optimizer.warmup_steps = 2;
  j.optimizer.grad_clip = 1.0;
  j.train.steps = steps;
  j.train.checkpoint_every = 5;
  j.train.keep_last = 2;
  j.train.log_every = 5;
  j.train.threads = 1;
  if (type == "gpt") {
    std::string text;
    for (int i = 0; i < 60; ++i) text += "pack my box with five dozen liquor jugs. ";
    WriteFile(dir / "text.txt", text);
    j.model = testing::TinyGpt(256, 32);
    j.model.d_model = 64;
    j.model.heads = 4;
    j.model.mlp = 128;
    j.data.uri = dir / "text.txt";
    j.data.batch_per_rank = 8;
    j.optimizer.lr = 1e-3;  // smooth: no loss spikes for rounding differences to ride on
  } else if (type == "cnn") {
    j.model = testing::TinyCnn("max");
    j.data.synthetic_samples = 256;
  } else {
    j.model = testing::TinyMlp("gelu");
    j.model.widths = {48, 96, 64, 10};
    j.data.synthetic_samples = 512;
  }
  return j;
}

struct RunResult {
  Status status;
  std::vector<float> losses;
  std::vector<float> params;  // final flat parameters, on the host
};

RunResult Train(const JobSpec& job, const std::string& ckpt, const std::string& device,
          int64_t stop_after = -1) {
  TrainerOptions o;
  o.checkpoint_dir = ckpt;
  o.device = device;
  o.stop_after = stop_after;
  RunResult r;
  auto t = Trainer::Create(job, o);
  if (!t.ok()) return {t.status(), {}, {}};
  (*t)->SetStepCallback([&](const StepMetrics& m) { r.losses.push_back(m.loss); });
  r.status = (*t)->Run();
  if (!r.status.ok()) return r;
  const kernels::Tensor& p = (*t)->model().flat_params();
  auto host = kernels::Tensor::Empty(p.shape(), p.dtype(), kernels::Device::Cpu());
  if (!host.ok()) return {host.status(), {}, {}};
  r.status = kernels::Copy(p, *host);
  r.params.assign(host->f32(), host->f32() + host->numel());
  return r;
}

// Stops `job` after `stop_after` steps in dir/split, resumes it to the end, and checks the
// joined loss sequence and the final checkpoint against the uninterrupted run in dir/full.
void ExpectResumeIsByteIdentical(const JobSpec& job, const TempDir& dir, const RunResult& full,
                                 int64_t stop_after) {
  RunResult first = Train(job, dir / "split", "cuda:0", stop_after);
  ASSERT_TRUE(first.status.ok()) << first.status.ToString();
  RunResult rest = Train(job, dir / "split", "cuda:0");
  ASSERT_TRUE(rest.status.ok()) << rest.status.ToString();
  std::vector<float> joined = first.losses;
  joined.insert(joined.end(), rest.losses.begin(), rest.losses.end());
  ASSERT_EQ(joined.size(), full.losses.size());
  EXPECT_EQ(0, std::memcmp(joined.data(), full.losses.data(), joined.size() * 4))
      << "the loss sequence of a resumed GPU run differs from an uninterrupted one";
  const std::string last = "ckpt-" + std::string(6 - std::to_string(job.train.steps).size(), '0') +
                           std::to_string(job.train.steps);
  for (const std::string f : {last + "/data.bin", last + "/manifest.json"}) {
    const std::string a = ReadFile(dir / ("full/" + f));
    EXPECT_FALSE(a.empty()) << f;
    EXPECT_TRUE(a == ReadFile(dir / ("split/" + f))) << f << " differs";
  }
}

double RelL2(const std::vector<float>& a, const std::vector<float>& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    num += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
    den += double(b[i]) * b[i];
  }
  return std::sqrt(num / std::max(den, 1e-30));
}

class GpuTraining : public ::testing::TestWithParam<std::string> {};

TEST_P(GpuTraining, FollowsTheCpuRunOfTheSameJob) {
  SKIP_WITHOUT_GPU();
  TempDir dir;
  const JobSpec job = BaseJob(dir, GetParam(), 15);
  RunResult cpu = Train(job, dir / "cpu", "cpu");
  RunResult gpu = Train(job, dir / "gpu", "cuda:0");
  ASSERT_TRUE(cpu.status.ok()) << cpu.status.ToString();
  ASSERT_TRUE(gpu.status.ok()) << gpu.status.ToString();
  ASSERT_EQ(gpu.losses.size(), cpu.losses.size());
  for (size_t i = 0; i < cpu.losses.size(); ++i) {
    EXPECT_NEAR(gpu.losses[i], cpu.losses[i], 2e-3 * std::abs(cpu.losses[i]) + 1e-5) << "step " << i + 1;
  }
  ASSERT_EQ(gpu.params.size(), cpu.params.size());
  EXPECT_LT(RelL2(gpu.params, cpu.params), 1e-3) << "final parameters after 15 AdamW steps";
  EXPECT_LT(cpu.losses.back(), cpu.losses.front());
}

TEST_P(GpuTraining, ResumeOnTheGpuIsByteIdentical) {
  SKIP_WITHOUT_GPU();
  TempDir dir;
  const JobSpec job = BaseJob(dir, GetParam(), 12);
  RunResult full = Train(job, dir / "full", "cuda:0");
  ASSERT_TRUE(full.status.ok()) << full.status.ToString();
  ExpectResumeIsByteIdentical(job, dir, full, /*stop_after=*/7);
}

INSTANTIATE_TEST_SUITE_P(Models, GpuTraining, ::testing::Values("mlp", "cnn", "gpt"));

// train.precision bf16 on the GPU (cuBLAS on bf16-rounded inputs, f32 accumulation): every
// step's loss stays within 3% of the f32 GPU run's, it learns, and resume is byte-identical.
TEST(GpuTrainingBf16, TracksF32AndResumesExactly) {
  SKIP_WITHOUT_GPU();
  TempDir dir;
  JobSpec f32 = BaseJob(dir, "gpt", 12);
  JobSpec bf16 = f32;
  bf16.train.precision = "bf16";
  RunResult ref = Train(f32, dir / "f32", "cuda:0");
  RunResult full = Train(bf16, dir / "full", "cuda:0");
  ASSERT_TRUE(ref.status.ok()) << ref.status.ToString();
  ASSERT_TRUE(full.status.ok()) << full.status.ToString();
  ASSERT_EQ(full.losses.size(), ref.losses.size());
  bool differs = false;
  for (size_t i = 0; i < ref.losses.size(); ++i) {
    EXPECT_NEAR(full.losses[i], ref.losses[i], 0.03 * std::abs(ref.losses[i])) << "step " << i + 1;
    differs |= full.losses[i] != ref.losses[i];
  }
  EXPECT_TRUE(differs) << "bf16 gave exactly the f32 losses: the bf16 products did not run";
  EXPECT_LT(full.losses.back(), full.losses.front());
  ExpectResumeIsByteIdentical(bf16, dir, full, /*stop_after=*/5);
}

// Checkpoints hold host bytes: a job stopped on the GPU continues on the CPU.
TEST(GpuTrainingCheckpoints, AGpuCheckpointResumesOnTheCpu) {
  SKIP_WITHOUT_GPU();
  TempDir dir;
  const JobSpec job = BaseJob(dir, "gpt", 12);
  RunResult cpu = Train(job, dir / "cpu", "cpu");
  ASSERT_TRUE(cpu.status.ok()) << cpu.status.ToString();
  RunResult first = Train(job, dir / "mixed", "cuda:0", /*stop_after=*/6);
  ASSERT_TRUE(first.status.ok()) << first.status.ToString();
  RunResult rest = Train(job, dir / "mixed", "cpu");
  ASSERT_TRUE(rest.status.ok()) << rest.status.ToString();
  ASSERT_EQ(first.losses.size() + rest.losses.size(), cpu.losses.size());
  for (size_t i = 0; i < rest.losses.size(); ++i) {
    const float want = cpu.losses[first.losses.size() + i];
    EXPECT_NEAR(rest.losses[i], want, 2e-3 * std::abs(want) + 1e-5) << "step " << first.losses.size() + i + 1;
  }
  EXPECT_LT(RelL2(rest.params, cpu.params), 1e-3);
}

}  // namespace
}  // namespace gantry::train
