// Job spec parsing and validation: valid specs of every kind, many invalid ones (each error
// must name file:line and the field path), and the YAML round trip.
#include "base/job_spec.h"

#include <gtest/gtest.h>

#include <filesystem>

#include <cstdio>
#include <fstream>
#include <map>
#include <sstream>

#include "gantry_config.h"

namespace gantry {
namespace {

constexpr char kGptTiny[] = R"(name: gpt-tiny
kind: train
resources: {ranks: 2, gpus_per_rank: 0, cpus_per_rank: 1}
model: {type: gpt, vocab: 8192, context: 128, d_model: 256, layers: 4, heads: 4, mlp: 1024}
data: {uri: "ceph://gantry/datasets/fortunes", batch_per_rank: 8, seed: 1}
optimizer: {type: adamw, lr: 3.0e-4, weight_decay: 0.01, warmup_steps: 100, schedule: cosine}
train: {steps: 2000, checkpoint_every: 200, keep_last: 3, checkpoint_uri: "file://.gantry/ckpt/gpt-tiny"}
comm: {backend: auto, bucket_mb: 25, timeout_s: 300}
restarts: {max: 3}
)";

constexpr char kMlp[] = R"(name: mlp-mnist
kind: train
model:
  type: mlp
  widths: [784, 512, 512, 10]
  activation: relu
data:
  uri: synthetic
  batch_per_rank: 128
optimizer:
  type: momentum
  lr: 0.01
  momentum: 0.9
train:
  steps: 50
)";

constexpr char kCnn[] = R"(name: cnn
kind: train
model: {type: cnn, input: [1, 28, 28], channels: [16, 32], kernel: 3, pool: max, classes: 10}
)";

constexpr char kCommand[] = R"(name: torch-ddp
kind: command
resources: {ranks: 4, labels: {zone: a}}
command:
  argv: [python3, train.py, --epochs, "3"]
  env: {OMP_NUM_THREADS: "1"}
  workdir: /tmp
restarts: {max: 0}
)";

constexpr char kServe[] = R"(name: gpt-serve
kind: serve
resources: {ranks: 2}
serve: {model_dir: models/gpt-tiny, shards: 2, port: 8501, max_batch: 16, batch_timeout_ms: 2}
)";

JobSpec MustParse(const std::string& yaml) {
  auto spec = ParseJobSpec(yaml, "job.yaml");
  EXPECT_TRUE(spec.ok()) << spec.status().message();
  return spec.ok() ? *spec : JobSpec{};
}

// Parsing must fail with a message containing "job.yaml:<line>: <path>: " and `what`.
void ExpectError(const std::string& yaml, int line, const std::string& path,
                 const std::string& what) {
  auto spec = ParseJobSpec(yaml, "job.yaml");
  ASSERT_FALSE(spec.ok()) << "accepted:\n" << yaml;
  EXPECT_EQ(spec.status().code(), StatusCode::kInvalidArgument);
  const std::string& msg = spec.status().message();
  std::string prefix = "job.yaml:" + std::to_string(line) + ": " + (path.empty() ? "" : path + ": ");
  EXPECT_NE(msg.find(prefix), std::string::npos) << "want '" << prefix << "' in:\n" << msg;
  EXPECT_NE(msg.find(what), std::string::npos) << "want '" << what << "' in:\n" << msg;
  EXPECT_EQ(msg.find("  at "), std::string::npos) << "no code locations for users:\n" << msg;
}

std::string Replace(std::string s, const std::string& from, const std::string& to) {
  size_t pos = s.find(from);
  EXPECT_NE(pos, std::string::npos) << from;
  return pos == std::string::npos ? s : s.replace(pos, from.size(), to);
}

TEST(JobSpecTest, ParsesGptTiny) {
  JobSpec s = MustParse(kGptTiny);
  EXPECT_EQ(s.name, "gpt-tiny");
  EXPECT_EQ(s.kind, JobKind::kTrain);
  EXPECT_EQ(s.resources.ranks, 2);
  EXPECT_EQ(s.model.type, "gpt");
  EXPECT_EQ(s.model.d_model, 256);
  EXPECT_EQ(s.model.mlp, 1024);
  EXPECT_EQ(s.data.uri, "ceph://gantry/datasets/fortunes");
  EXPECT_DOUBLE_EQ(s.optimizer.lr, 3e-4);
  EXPECT_EQ(s.optimizer.schedule, "cosine");
  EXPECT_EQ(s.train.steps, 2000);
  EXPECT_EQ(s.train.checkpoint_uri, "file://.gantry/ckpt/gpt-tiny");
  EXPECT_DOUBLE_EQ(s.comm.bucket_mb, 25.0);
  EXPECT_EQ(s.restarts.max, 3);
  EXPECT_EQ(s.source, "job.yaml");
}

TEST(JobSpecTest, GptMlpDefaultsToFourTimesDModel) {
  JobSpec s = MustParse(Replace(kGptTiny, ", mlp: 1024", ""));
  EXPECT_EQ(s.model.mlp, 1024);
  s = MustParse(Replace(Replace(kGptTiny, ", mlp: 1024", ""), "d_model: 256", "d_model: 64"));
  EXPECT_EQ(s.model.mlp, 256);
}

TEST(JobSpecTest, ParsesMlpCnnCommandServe) {
  JobSpec mlp = MustParse(kMlp);
  EXPECT_EQ(mlp.model.widths, (std::vector<int>{784, 512, 512, 10}));
  EXPECT_EQ(mlp.optimizer.type, "momentum");
  EXPECT_EQ(mlp.data.batch_per_rank, 128);
  JobSpec cnn = MustParse(kCnn);
  EXPECT_EQ(cnn.model.input, (std::vector<int>{1, 28, 28}));
  EXPECT_EQ(cnn.model.channels, (std::vector<int>{16, 32}));
  JobSpec cmd = MustParse(kCommand);
  EXPECT_EQ(cmd.kind, JobKind::kCommand);
  EXPECT_EQ(cmd.command.argv, (std::vector<std::string>{"python3", "train.py", "--epochs", "3"}));
  EXPECT_EQ(cmd.command.env.at("OMP_NUM_THREADS"), "1");
  EXPECT_EQ(cmd.resources.labels.at("zone"), "a");
  EXPECT_EQ(cmd.restarts.max, 0);
  JobSpec serve = MustParse(kServe);
  EXPECT_EQ(serve.kind, JobKind::kServe);
  EXPECT_EQ(serve.serve.model_dir, "models/gpt-tiny");
  EXPECT_EQ(serve.serve.shards, 2);
}

TEST(JobSpecTest, MalformedYamlNamesTheLine) {
  ExpectError("name: x\nkind: train\nmodel: {type: gpt\n", 4, "", "invalid YAML");
  ExpectError("name: x\n  kind: [\n", 2, "", "invalid YAML");
  ExpectError("- just\n- a list\n", 1, "", "must be a YAML mapping");
  ExpectError("", 1, "", "must be a YAML mapping");
  // Bytes that are not UTF-8 (Latin-1 'é' on line 2), a second document (it was ignored).
  ExpectError("name: x\n# caf\xe9\nkind: train\n", 2, "", "not UTF-8 text (byte 0xE9)");
  ExpectError("name: x\nkind: command\ncommand: {argv: [true]}\n---\nname: y\n", 5, "",
              "one YAML document");
  // Multi-byte UTF-8 is fine; a trailing '---' (an empty document) too.
  MustParse(std::string(kMlp) + "# caf\xc3\xa9 \xe2\x9c\x93\n");
  MustParse(std::string(kMlp) + "---\n");
  // Surrogates, overlong forms and code points past U+10FFFF are not UTF-8.
  for (const char* bad : {"\xed\xa0\x80", "\xe0\x80\xaf", "\xf4\x90\x80\x80", "\xf5\x80\x80\x80"}) {
    ExpectError("name: x\n# " + std::string(bad) + "\nkind: train\n", 2, "", "not UTF-8 text");
  }
  // A huge value is quoted clipped, not whole.
  auto spec = ParseJobSpec("name: " + std::string(100000, 'n') + "\nkind: train\n", "job.yaml");
  ASSERT_FALSE(spec.ok());
  EXPECT_LT(spec.status().message().size(), 2000u) << spec.status().message().size();
  EXPECT_NE(spec.status().message().find("(100000 bytes)"), std::string::npos);
  // Clipped on a character boundary: 'é' is 2 bytes, the cut never splits one.
  std::string accents;
  for (int i = 0; i < 200; ++i) accents += "\xc3\xa9";
  auto clipped = ParseJobSpec("name: x" + accents + "\nkind: train\n", "job.yaml");
  ASSERT_FALSE(clipped.ok());
  const std::string& msg = clipped.status().message();
  const size_t cut = msg.find("...");
  ASSERT_NE(cut, std::string::npos) << msg;
  EXPECT_NE(static_cast<unsigned char>(msg[cut - 1]), 0xC3) << "a split character";
  // A negative train.steps is reported once, not also as a warm-up longer than it.
  auto neg = ParseJobSpec(Replace(kMlp, "  steps: 50", "  steps: -3"), "job.yaml");
  ASSERT_FALSE(neg.ok());
  EXPECT_EQ(neg.status().message().find("warmup_steps"), std::string::npos)
      << neg.status().message();
}

TEST(JobSpecTest, UnknownFieldsAreErrors) {
  ExpectError(Replace(kGptTiny, "heads: 4", "head: 4"), 4, "model.head",
              "unknown field 'head' (did you mean 'heads'?)");
  ExpectError(std::string(kMlp) + "colour: blue\n", 16, "colour", "unknown field 'colour'");
  ExpectError(Replace(kMlp, "  lr: 0.01", "  lr: 0.01\n  nesterov: true"), 13,
              "optimizer.nesterov", "expected one of: type, lr");
  ExpectError(Replace(kMlp, "  steps: 50", "  steps: 50\n  steps: 60"), 16, "train.steps",
              "given twice");
}

TEST(JobSpecTest, MistypedValues) {
  ExpectError(Replace(kGptTiny, "layers: 4", "layers: four"), 4, "model.layers",
              "expected an integer, got 'four'");
  ExpectError(Replace(kGptTiny, "layers: 4", "layers: 4.5"), 4, "model.layers",
              "expected an integer");
  ExpectError(Replace(kMlp, "batch_per_rank: 128", "batch_per_rank: \"128\""), 9,
              "data.batch_per_rank", "quoted string");
  ExpectError(Replace(kMlp, "lr: 0.01", "lr: fast"), 12, "optimizer.lr", "expected a finite number");
  ExpectError(Replace(kMlp, "lr: 0.01", "lr: .nan"), 12, "optimizer.lr", "finite");
  ExpectError(Replace(kGptTiny, "timeout_s: 300}", "timeout_s: 300, zero1: maybe}"), 8,
              "comm.zero1", "expected true or false");
  ExpectError(Replace(kMlp, "widths: [784, 512, 512, 10]", "widths: 784"), 5, "model.widths",
              "expected a list of integers");
  ExpectError(Replace(kMlp, "widths: [784, 512, 512, 10]", "widths: [784, x, 10]"), 5,
              "model.widths[1]", "expected an integer");
  ExpectError(Replace(kCommand, "argv: [python3, train.py, --epochs, \"3\"]", "argv: python3"), 5,
              "command.argv", "expected a list of strings");
  ExpectError(Replace(kGptTiny, "vocab: 8192", "vocab: 99999999999"), 4, "model.vocab",
              "out of range");
  ExpectError(Replace(kMlp, "  batch_per_rank: 128", "  batch_per_rank:"), 9,
              "data.batch_per_rank", "got an empty value");
  ExpectError(Replace(kGptTiny, "seed: 1", "seed: -1"), 5, "data.seed", "non-negative integer");
  ExpectError(Replace(kCnn, "model: {type: cnn,", "model: [type: cnn,"), 3, "", "invalid YAML");
  ExpectError("name: a\nkind: train\nmodel: 3\n", 3, "model", "expected a mapping");
}

TEST(JobSpecTest, RangesAndEnumerations) {
  ExpectError(Replace(kGptTiny, "ranks: 2", "ranks: 0"), 3, "resources.ranks",
              "must be in [1, 65536], got 0");
  ExpectError(Replace(kGptTiny, "steps: 2000", "steps: -5"), 7, "train.steps", "got -5");
  ExpectError(Replace(kMlp, "batch_per_rank: 128", "batch_per_rank: 0"), 9, "data.batch_per_rank",
              "got 0");
  ExpectError(Replace(kGptTiny, "type: adamw", "type: lion"), 6, "optimizer.type",
              "unknown value 'lion'; expected one of: sgd, momentum, adam, adamw");
  ExpectError(Replace(kGptTiny, "backend: auto", "backend: gloo"), 8, "comm.backend",
              "unknown value 'gloo'");
  ExpectError(Replace(kGptTiny, "kind: train", "kind: batch"), 2, "kind", "unknown kind 'batch'");
  ExpectError(Replace(kGptTiny, "name: gpt-tiny", "name: GPT_tiny"), 1, "name",
              "lowercase letters");
  ExpectError(Replace(kGptTiny, "lr: 3.0e-4", "lr: 0"), 6, "optimizer.lr", "must be in (0, 10]");
  ExpectError(Replace(kServe, "port: 8501", "port: 70000"), 4, "serve.port", "[1, 65535]");
  ExpectError(Replace(kMlp, "uri: synthetic", "uri: s3://bucket/x"), 8, "data.uri",
              "unsupported URI scheme 's3'");
  ExpectError(Replace(kCnn, "kernel: 3", "kernel: 4"), 3, "model.kernel", "must be odd");
  ExpectError(Replace(kCommand, "OMP_NUM_THREADS", "1BAD"), 6, "command.env.1BAD",
              "environment variable name");
}

TEST(JobSpecTest, CrossFieldRules) {
  ExpectError(Replace(kGptTiny, "d_model: 256", "d_model: 250"), 4, "model.d_model",
              "model.d_model (250) must be divisible by model.heads (4)");
  ExpectError(Replace(kMlp, "widths: [784, 512, 512, 10]", "widths: [784]"), 5, "model.widths",
              "at least 2 widths");
  ExpectError(Replace(kGptTiny, "warmup_steps: 100", "warmup_steps: 3000"), 6,
              "optimizer.warmup_steps", "cannot be longer than train.steps");
  ExpectError(Replace(kGptTiny, "keep_last: 3", "keep_last: 3, device: cuda"), 7, "train.device",
              "needs resources.gpus_per_rank >= 1");
  ExpectError(Replace(kGptTiny, "backend: auto", "backend: nccl"), 8, "comm.backend",
              "'nccl' needs train.device cuda");
  ExpectError(Replace(kGptTiny, "keep_last: 3", "keep_last: 3, precision: fp8"), 7,
              "train.precision", "fp8");
  {  // bf16 is accepted on both devices (CUDA: cuBLAS bf16 products, f32 accumulation)
    JobSpec gpu = MustParse(Replace(Replace(kGptTiny, "keep_last: 3", "keep_last: 3, device: cuda, precision: bf16"),
                                    "gpus_per_rank: 0", "gpus_per_rank: 1"));
    EXPECT_EQ(gpu.train.precision, "bf16");
    EXPECT_EQ(gpu.train.device, "cuda");
  }
  ExpectError(Replace(kGptTiny, "heads: 4", "heads: 4, widths: [1, 2]"), 4, "model.widths",
              "not used by model type 'gpt'");
  ExpectError(Replace(kCnn, "input: [1, 28, 28]", "input: [1, 2, 2]"), 3, "model.channels",
              "below 1x1");
  ExpectError(Replace(kGptTiny, "vocab: 8192, ", ""), 4, "model.vocab",
              "required for model type 'gpt'");
}

TEST(JobSpecTest, KindSpecificSections) {
  ExpectError("name: a\nkind: train\ndata: {uri: synthetic}\n", 1, "",
              "section 'model' is required for kind 'train'");
  ExpectError("name: a\nkind: command\nresources: {ranks: 2}\n", 1, "",
              "section 'command' is required for kind 'command'");
  ExpectError("name: a\nkind: command\ncommand: {workdir: /tmp}\n", 3, "command.argv",
              "required for kind 'command'");
  ExpectError("name: a\nkind: serve\nserve: {port: 80}\n", 3, "serve.model_dir",
              "required for kind 'serve'");
  ExpectError(std::string(kServe) + "model: {type: mlp, widths: [2, 2]}\n", 5, "model",
              "not used by kind 'serve'");
  ExpectError("kind: serve\nserve: {model_dir: m}\n", 1, "name", "required");
  ExpectError("name: a\nserve: {model_dir: m}\n", 1, "kind", "required");
}

TEST(JobSpecTest, ReportsEveryProblemAtOnce) {
  std::string yaml = Replace(Replace(kGptTiny, "ranks: 2", "ranks: 0"), "steps: 2000", "steps: 0");
  auto spec = ParseJobSpec(yaml, "job.yaml");
  ASSERT_FALSE(spec.ok());
  EXPECT_NE(spec.status().message().find("job.yaml:3: resources.ranks"), std::string::npos);
  EXPECT_NE(spec.status().message().find("job.yaml:7: train.steps"), std::string::npos);
}

TEST(JobSpecTest, RoundTripsEveryKind) {
  for (const char* yaml : {kGptTiny, kMlp, kCnn, kCommand, kServe}) {
    JobSpec a = MustParse(yaml);
    std::string text = JobSpecToYaml(a);
    JobSpec b = MustParse(text);
    EXPECT_TRUE(a == b) << text;
    EXPECT_EQ(JobSpecToYaml(b), text);
  }
  // Every field off its default survives (the coordinator ships specs to workers as YAML).
  JobSpec a = MustParse(kMlp);
  a.train.precision = "bf16";
  a.train.threads = 3;
  a.resources.gpus_per_rank = 2;
  a.train.device = "cuda:1";
  a.comm.bf16_reduce = true;
  a.comm.zero1 = true;
  a.optimizer.grad_clip = 0.5;
  a.data.format = "tokens_u32";
  JobSpec b = MustParse(JobSpecToYaml(a));
  EXPECT_TRUE(a == b) << JobSpecToYaml(a);
  EXPECT_EQ(b.train.precision, "bf16");
}

TEST(JobSpecTest, RoundTripsAwkwardStrings) {
  JobSpec a = MustParse(kCommand);
  a.command.argv = {"sh", "-c", "echo 'a: b' # not a comment", "", "~", "null", "true", "1e3",
                    "- dash", "{x}"};
  a.command.env = {{"A", "x\ny"}, {"B", ""}};
  a.command.workdir = "";
  ASSERT_TRUE(ValidateJobSpec(a).ok());
  JobSpec b = MustParse(JobSpecToYaml(a));
  EXPECT_EQ(b.command.argv, a.command.argv) << JobSpecToYaml(a);
  EXPECT_EQ(b.command.env, a.command.env);
  EXPECT_TRUE(a == b);
}

TEST(JobSpecTest, FieldsListEveryFieldOnceAsSectionDotKey) {
  JobSpec a = MustParse(kMlp);
  a.optimizer.lr = 0.125;
  const auto fields = JobSpecFields(a);
  std::map<std::string, std::string> by_name;
  for (const auto& [k, v] : fields) EXPECT_TRUE(by_name.emplace(k, v).second) << "twice: " << k;
  EXPECT_EQ(by_name.at("name"), a.name);
  EXPECT_EQ(by_name.at("optimizer.lr"), "0.125");
  EXPECT_EQ(by_name.at("model.widths"), "[784, 512, 512, 10]");
  EXPECT_EQ(by_name.at("data.seed"), std::to_string(a.data.seed));
  EXPECT_EQ(by_name.at("train.precision"), "f32");
  // One entry per line of the canonical YAML that holds a value.
  size_t values = 0;
  std::istringstream yaml(JobSpecToYaml(a));
  for (std::string line; std::getline(yaml, line);) values += line.back() != ':';
  EXPECT_EQ(fields.size(), values) << JobSpecToYaml(a);
}

TEST(JobSpecTest, ValidateConstructedSpec) {
  JobSpec s;
  s.name = "x";
  s.model.type = "gpt";
  s.model.vocab = 100;
  s.model.context = 8;
  s.model.d_model = 30;
  s.model.layers = 1;
  s.model.heads = 4;
  s.model.mlp = 120;
  s.source = "api";
  Status st = ValidateJobSpec(s);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("api: model.d_model: model.d_model (30) must be divisible"),
            std::string::npos)
      << st.message();
  s.model.heads = 5;
  EXPECT_TRUE(ValidateJobSpec(s).ok()) << ValidateJobSpec(s).message();
}

TEST(JobSpecTest, ParseFile) {
  std::string path = ::testing::TempDir() + "/gantry_job_spec_test.yaml";
  {
    std::ofstream out(path);
    out << Replace(kGptTiny, "heads: 4", "heads: 3");
  }
  auto spec = ParseJobSpecFile(path);
  ASSERT_FALSE(spec.ok());
  EXPECT_NE(spec.status().message().find(path + ":4: model.d_model"), std::string::npos)
      << spec.status().message();
  std::remove(path.c_str());
  auto missing = ParseJobSpecFile("/nonexistent/job.yaml");
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("/nonexistent/job.yaml"), std::string::npos);
}

// Every ```yaml block of docs/job-spec.md is a valid spec: the documentation cannot drift.
TEST(JobSpecTest, DocumentationExamplesParse) {
  std::ifstream in(std::string(GANTRY_SOURCE_DIR) + "/docs/job-spec.md");
  ASSERT_TRUE(in) << "docs/job-spec.md missing";
  std::stringstream text;
  text << in.rdbuf();
  std::string doc = text.str();
  int blocks = 0;
  for (size_t pos = doc.find("```yaml\n"); pos != std::string::npos;
       pos = doc.find("```yaml\n", pos)) {
    pos += 8;
    size_t end = doc.find("```", pos);
    ASSERT_NE(end, std::string::npos);
    auto spec = ParseJobSpec(doc.substr(pos, end - pos), "docs/job-spec.md#" + std::to_string(blocks));
    EXPECT_TRUE(spec.ok()) << spec.status().message();
    ++blocks;
  }
  EXPECT_GE(blocks, 4);
}

// Every shipped example is a valid job (they are what the README and docs point users at).
TEST(JobSpecTest, EveryExampleParses) {
  int seen = 0;
  for (const auto& e : std::filesystem::directory_iterator(GANTRY_EXAMPLES_DIR)) {
    if (e.path().extension() != ".yaml") continue;
    ++seen;
    auto spec = ParseJobSpecFile(e.path().string());
    EXPECT_TRUE(spec.ok()) << e.path() << ": " << spec.status().ToString();
  }
  EXPECT_GE(seen, 4);
}

}  // namespace
}  // namespace gantry
