// `gantry train` / `gantry sample` as processes: resume through the CLI gives byte-identical
// checkpoints and identical loss logs; bad YAML, missing data and NaN loss exit non-zero with
// a message naming the line, the path or the step.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <thread>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "tests/unit/train/train_test_util.h"

namespace gantry::train {
namespace {

using testing::ReadFile;
using testing::TempDir;
using testing::WriteFile;

struct Result {
  int exit_code = -1;
  std::string out, err;
};

// Runs the gantry binary with `args` (shell-quoted by the caller), capturing both streams.
Result Gantry(const TempDir& dir, const std::string& args) {
  const std::string out = dir / "stdout.txt", err = dir / "stderr.txt";
  const std::string cmd =
      std::string(GANTRY_BINARY) + " " + args + " >" + out + " 2>" + err + " </dev/null";
  const int rc = std::system(cmd.c_str());
  Result r;
  r.exit_code = WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
  r.out = ReadFile(out);
  r.err = ReadFile(err);
  return r;
}

std::string TextJobYaml(const TempDir& dir, const std::string& extra_optimizer = "") {
  std::string text;
  for (int i = 0; i < 30; ++i) text += "a gantry moves heavy loads along its rails. ";
  WriteFile(dir / "text.txt", text);
  return "name: cli-gpt\n"
         "kind: train\n"
         "model: {type: gpt, vocab: 256, context: 16, d_model: 16, layers: 1, heads: 2, mlp: 32}\n"
         "data: {uri: \"" +
         (dir / "text.txt") +
         "\", batch_per_rank: 4, seed: 3}\n"
         "optimizer: {type: adamw, lr: 0.01, weight_decay: 0.01, warmup_steps: 2, "
         "schedule: cosine" +
         extra_optimizer +
         "}\n"
         "train: {steps: 20, log_every: 1, checkpoint_every: 5, keep_last: 2, threads: 1}\n";
}

// (step, loss) of every "train step" JSON line on stderr.
std::vector<std::pair<int64_t, double>> StepLosses(const std::string& err) {
  std::vector<std::pair<int64_t, double>> out;
  std::istringstream in(err);
  std::string line;
  while (std::getline(in, line)) {
    auto j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_discarded() || j.value("msg", "") != "train step") continue;
    out.emplace_back(j["step"].get<int64_t>(), j["loss"].get<double>());
  }
  return out;
}

// The text job run whole into dir/full, and again into dir/split stopped after step 10.
struct SplitRun {
  std::string job;
  Result full, first;
};
SplitRun RunWholeAndStopAtTen(const TempDir& dir) {
  WriteFile(dir / "job.yaml", TextJobYaml(dir));
  SplitRun r;
  r.job = dir / "job.yaml";
  r.full = Gantry(dir, "train " + r.job + " --checkpoint-dir " + (dir / "full"));
  r.first =
      Gantry(dir, "train " + r.job + " --checkpoint-dir " + (dir / "split") + " --stop-after 10");
  return r;
}

TEST(TrainCliTest, ResumedRunMatchesUninterruptedRunByteForByte) {
  TempDir dir;
  const auto [job, full, first] = RunWholeAndStopAtTen(dir);
  ASSERT_EQ(full.exit_code, 0) << full.err;
  ASSERT_EQ(first.exit_code, 0) << first.err;
  Result second = Gantry(dir, "train " + job + " --resume --checkpoint-dir " + (dir / "split"));
  ASSERT_EQ(second.exit_code, 0) << second.err;
  EXPECT_NE(second.err.find("resumed from checkpoint"), std::string::npos);

  auto joined = StepLosses(first.err);
  auto rest = StepLosses(second.err);
  joined.insert(joined.end(), rest.begin(), rest.end());
  auto expected = StepLosses(full.err);
  ASSERT_EQ(expected.size(), 20u);
  EXPECT_EQ(joined, expected);
  for (const char* f : {"ckpt-000020/data.bin", "ckpt-000020/manifest.json", "latest"}) {
    const std::string a = ReadFile(dir / ("full/" + std::string(f)));
    ASSERT_FALSE(a.empty()) << f;
    EXPECT_TRUE(a == ReadFile(dir / ("split/" + std::string(f)))) << f << " differs";
  }

  // Once more on the finished run: nothing to train, and no made-up loss ("loss":0 before).
  Result again = Gantry(dir, "train " + job + " --checkpoint-dir " + (dir / "full"));
  ASSERT_EQ(again.exit_code, 0) << again.err;
  EXPECT_NE(again.err.find("the checkpoint is already at the last step"), std::string::npos)
      << again.err;
  EXPECT_EQ(again.err.find("\"loss\":0"), std::string::npos) << again.err;
  EXPECT_TRUE(StepLosses(again.err).empty()) << again.err;

  Result sample = Gantry(dir, "sample " + (dir / "full") + " --prompt 'a gantry' --tokens 12");
  ASSERT_EQ(sample.exit_code, 0) << sample.err;
  EXPECT_EQ(sample.out.rfind("a gantry", 0), 0u) << sample.out;
  EXPECT_EQ(sample.out.size(), std::string("a gantry").size() + 12 + 1) << sample.out;
}

TEST(TrainCliTest, BadYamlExitsNonZeroNamingTheLine) {
  TempDir dir;
  WriteFile(dir / "bad.yaml", "name: x\nkind: train\nmodel: {type: gpt, vocab: [\n");
  Result r = Gantry(dir, "train " + (dir / "bad.yaml"));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("bad.yaml:"), std::string::npos) << r.err;
  WriteFile(dir / "typo.yaml",
            "name: x\nkind: train\nmodel: {type: mlp, widths: [4, 2]}\n"
            "optimiser: {type: sgd}\n");
  r = Gantry(dir, "train " + (dir / "typo.yaml"));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("typo.yaml:4"), std::string::npos) << r.err;
}

TEST(TrainCliTest, MissingDataFileExitsNonZeroNamingThePath) {
  TempDir dir;
  WriteFile(dir / "job.yaml",
            "name: x\nkind: train\n"
            "model: {type: gpt, vocab: 256, context: 8, d_model: 8, layers: 1, "
            "heads: 1, mlp: 8}\n"
            "data: {uri: \"file:///no/such/dir/tokens.bin\"}\n");
  Result r = Gantry(dir, "train " + (dir / "job.yaml") + " --checkpoint-dir " + (dir / "c"));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("/no/such/dir/tokens.bin"), std::string::npos) << r.err;
}

// `gantry train` on 8 records of 3 inputs (labelled tensors) with `model` (a YAML flow map),
// 5 SGD steps checkpointed every step: it must stop at step 1 with "loss is <what>", exit 1,
// and leave no checkpoint of that step.
void ExpectLossStopsTheRun(const std::vector<float>& x, const std::string& targets_npy,
                           const std::string& model, const std::string& what) {
  TempDir dir;
  WriteFile(dir / "inputs.npy",
            testing::Npy("<f4", "(8, 3)", std::string((const char*)x.data(), x.size() * 4)));
  WriteFile(dir / "targets.npy", targets_npy);
  WriteFile(dir / "job.yaml", "name: x\nkind: train\nmodel: " + model +
                                  "\n"
                                  "data: {uri: \"" +
                                  dir.path() +
                                  "\", batch_per_rank: 4}\n"
                                  "optimizer: {type: sgd, lr: 0.1}\n"
                                  "train: {steps: 5, checkpoint_every: 1}\n");
  Result r = Gantry(dir, "train " + (dir / "job.yaml") + " --checkpoint-dir " + (dir / "c"));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("loss is " + what + " at step 1"), std::string::npos) << r.err;
  EXPECT_FALSE(std::filesystem::exists(dir / "c/ckpt-000001"));
}

TEST(TrainCliTest, NanLossExitsNonZeroNamingTheStep) {
  std::vector<float> x(8 * 3, std::nanf(""));  // corrupt data: every input is NaN
  std::vector<int32_t> y(8, 1);
  ExpectLossStopsTheRun(x, testing::Npy("<i4", "(8,)", std::string((char*)y.data(), 32)),
                        "{type: mlp, widths: [3, 4, 2], activation: tanh}", "NaN");
}

// Issue 2's resume test with a real kill: a run SIGKILLed between checkpoints (no chance to
// save anything) resumes from its last checkpoint and ends with the bytes of a run that was
// never interrupted; the steps logged after the resume repeat the uninterrupted run's losses.
TEST(TrainCliTest, KilledRunResumesToByteIdenticalCheckpoints) {
  TempDir dir;
  std::string yaml = TextJobYaml(dir);
  yaml.replace(yaml.find("steps: 20, log_every: 1, checkpoint_every: 5"),
               std::string("steps: 20, log_every: 1, checkpoint_every: 5").size(),
               "steps: 3000, log_every: 1, checkpoint_every: 400");
  WriteFile(dir / "job.yaml", yaml);
  const std::string job = dir / "job.yaml";
  Result full = Gantry(dir, "train " + job + " --checkpoint-dir " + (dir / "full"));
  ASSERT_EQ(full.exit_code, 0) << full.err;

  // Killed once its log passed step 1000 (past ckpt-000800, before ckpt-001200 at this pace;
  // wherever it lands, resuming must give the same bytes).
  const std::string log = dir / "killed.txt";
  const pid_t pid = fork();
  if (pid == 0) {
    const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    dup2(fd, 2);
    execl(GANTRY_BINARY, GANTRY_BINARY, "train", job.c_str(), "--checkpoint-dir",
          (dir / "split").c_str(), "--progress", "json", static_cast<char*>(nullptr));
    _exit(127);
  }
  ASSERT_GT(pid, 0);
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  bool reached = false;
  while (!reached && std::chrono::steady_clock::now() < until) {
    std::ifstream f(log);
    std::stringstream ss;
    ss << f.rdbuf();
    reached = ss.str().find("\"step\":1000,") != std::string::npos;
    if (!reached) std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  kill(pid, SIGKILL);
  int status = 0;
  waitpid(pid, &status, 0);
  ASSERT_TRUE(reached) << ReadFile(log);
  ASSERT_TRUE(WIFSIGNALED(status)) << "the run ended before it was killed";
  ASSERT_FALSE(std::filesystem::exists(dir / "split/ckpt-003000"));

  Result resumed = Gantry(dir, "train " + job + " --checkpoint-dir " + (dir / "split"));
  ASSERT_EQ(resumed.exit_code, 0) << resumed.err;
  EXPECT_NE(resumed.err.find("resumed from checkpoint"), std::string::npos) << resumed.err;
  for (const char* f : {"ckpt-003000/data.bin", "ckpt-003000/manifest.json", "latest"}) {
    const std::string a = ReadFile(dir / ("full/" + std::string(f)));
    ASSERT_FALSE(a.empty()) << f;
    EXPECT_TRUE(a == ReadFile(dir / ("split/" + std::string(f)))) << f << " differs";
  }
  const auto expected = StepLosses(full.err);
  const auto after = StepLosses(resumed.err);
  ASSERT_FALSE(after.empty());
  ASSERT_EQ(after.back().first, 3000);
  for (const auto& [step, loss] : after) {
    ASSERT_EQ(loss, expected[size_t(step - 1)].second) << "step " << step;
  }
}

// A checkpoint whose bytes rotted is refused naming the tensor and the next older one is used;
// the run still ends with the bytes of an uninterrupted run.
TEST(TrainCliTest, CorruptCheckpointFallsBackToThePreviousOne) {
  TempDir dir;
  const auto [job, full, first] = RunWholeAndStopAtTen(dir);
  ASSERT_EQ(full.exit_code, 0) << full.err;
  ASSERT_EQ(first.exit_code, 0) << first.err;
  {
    std::fstream f(dir / "split/ckpt-000010/data.bin", std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(100);
    char c = 0;
    f.read(&c, 1);
    f.seekp(100);
    c = static_cast<char>(c ^ 0x40);
    f.write(&c, 1);
  }
  const std::string rotted = ReadFile(dir / "split/ckpt-000010/data.bin");
  ASSERT_FALSE(rotted.empty());
  Result second = Gantry(dir, "train " + job + " --checkpoint-dir " + (dir / "split"));
  ASSERT_EQ(second.exit_code, 0) << second.err;
  EXPECT_NE(second.err.find("checkpoint refused"), std::string::npos) << second.err;
  EXPECT_NE(second.err.find("ckpt-000010"), std::string::npos) << second.err;
  EXPECT_NE(second.err.find("tensor"), std::string::npos) << second.err;
  EXPECT_NE(second.err.find("ckpt-000005"), std::string::npos) << second.err;
  EXPECT_TRUE(ReadFile(dir / "full/ckpt-000020/data.bin") ==
              ReadFile(dir / "split/ckpt-000020/data.bin"));
  // Training passed step 10 again: the rotted checkpoint was moved aside, not overwritten.
  EXPECT_NE(second.err.find("moved aside"), std::string::npos) << second.err;
  EXPECT_TRUE(ReadFile(dir / "split/replaced/ckpt-000010.1/data.bin") == rotted);
}

// An infinite loss (here: regression targets of 1e30, squared past float's range) stops the
// run with the step, exit 1, and no checkpoint for that step.
TEST(TrainCliTest, InfLossExitsNonZeroNamingTheStep) {
  std::vector<float> x(8 * 3, 0.5f), y(8 * 2, 1e30f);
  ExpectLossStopsTheRun(x, testing::Npy("<f4", "(8, 2)", std::string((char*)y.data(), 64)),
                        "{type: mlp, widths: [3, 4, 2], loss: mse}", "Inf");
}

// Impossible shapes and mistyped values stop `gantry train` before anything runs: exit 1, the
// file, line and field in the message, no checkpoint directory created.
TEST(TrainCliTest, ImpossibleShapesAndMistypedValuesExitNonZero) {
  TempDir dir;
  WriteFile(dir / "heads.yaml",
            "name: x\nkind: train\n"
            "model: {type: gpt, vocab: 256, context: 8, d_model: 30, layers: 1, heads: 4, mlp: 8}\n");
  Result r = Gantry(dir, "train " + (dir / "heads.yaml") + " --checkpoint-dir " + (dir / "c"));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("heads.yaml:3"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("heads"), std::string::npos) << r.err;
  WriteFile(dir / "type.yaml",
            "name: x\nkind: train\nmodel: {type: mlp, widths: [4, 2]}\n"
            "train: {steps: many}\n");
  r = Gantry(dir, "train " + (dir / "type.yaml") + " --checkpoint-dir " + (dir / "c"));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("type.yaml:4"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("train.steps"), std::string::npos) << r.err;
  EXPECT_FALSE(std::filesystem::exists(dir / "c"));
}

// Command-line overrides obey the ranges of the fields they replace (--steps 0 used to write
// an untrained checkpoint), but not the spec's cross-field rules: --steps below the warm-up is
// a quick run, and --device needs no resources.gpus_per_rank (a scheduler setting).
TEST(TrainCliTest, OverridesAreCheckedLikeTheFieldsTheyReplace) {
  TempDir dir;
  WriteFile(dir / "job.yaml",
            "name: x\nkind: train\nmodel: {type: mlp, widths: [4, 2]}\n"
            "optimizer: {type: adamw, lr: 0.001, warmup_steps: 5, schedule: cosine}\n"
            "train: {steps: 10}\n");
  for (const char* flag : {"--steps 0", "--threads 100000", "--device tpu"}) {
    Result r = Gantry(dir, "train " + (dir / "job.yaml") + " --checkpoint-dir " + (dir / "c") +
                               " " + flag);
    EXPECT_NE(r.exit_code, 0) << flag;
    EXPECT_NE(r.err.find(std::string(flag).substr(0, std::string(flag).find(' '))),
              std::string::npos)
        << flag << ": " << r.err;
    EXPECT_FALSE(std::filesystem::exists(dir / "c/latest")) << flag << " wrote a checkpoint";
  }
  Result quick = Gantry(dir, "train " + (dir / "job.yaml") + " --checkpoint-dir " + (dir / "q") +
                                 " --steps 3");
  EXPECT_EQ(quick.exit_code, 0) << quick.err;
}

}  // namespace
}  // namespace gantry::train
