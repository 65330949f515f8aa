// `gantry train` / `gantry sample` as processes: resume through the CLI gives byte-identical
// checkpoints and identical loss logs; bad YAML, missing data and NaN loss exit non-zero with
// a message naming the line, the path or the step.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cmath>
#include <filesystem>
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

TEST(TrainCliTest, ResumedRunMatchesUninterruptedRunByteForByte) {
  TempDir dir;
  WriteFile(dir / "job.yaml", TextJobYaml(dir));
  const std::string job = dir / "job.yaml";
  Result full = Gantry(dir, "train " + job + " --checkpoint-dir " + (dir / "full"));
  ASSERT_EQ(full.exit_code, 0) << full.err;
  Result first =
      Gantry(dir, "train " + job + " --checkpoint-dir " + (dir / "split") + " --stop-after 10");
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

TEST(TrainCliTest, NanLossExitsNonZeroNamingTheStep) {
  TempDir dir;
  std::vector<float> x(8 * 3, std::nanf(""));  // corrupt data: every input is NaN
  std::vector<int32_t> y(8, 1);
  WriteFile(dir / "inputs.npy", testing::Npy("<f4", "(8, 3)", std::string((char*)x.data(), 96)));
  WriteFile(dir / "targets.npy", testing::Npy("<i4", "(8,)", std::string((char*)y.data(), 32)));
  WriteFile(dir / "job.yaml",
            "name: x\nkind: train\nmodel: {type: mlp, widths: [3, 4, 2], activation: tanh}\n"
            "data: {uri: \"" +
                dir.path() +
                "\", batch_per_rank: 4}\n"
                "optimizer: {type: sgd, lr: 0.1}\n"
                "train: {steps: 5, checkpoint_every: 1}\n");
  Result r = Gantry(dir, "train " + (dir / "job.yaml") + " --checkpoint-dir " + (dir / "c"));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("loss is NaN at step 1"), std::string::npos) << r.err;
  EXPECT_FALSE(std::filesystem::exists(dir / "c/ckpt-000001"));
}

}  // namespace
}  // namespace gantry::train
