// Job specs: the YAML a user submits (kind: train | command | serve), parsed and validated.
// Every error names the field path and the YAML line ("gpt-tiny.yaml:7: model.heads: ...").
// Unknown fields are errors (typos must not be silently ignored). The schema is documented in
// docs/job-spec.md. Pure data + parsing; no I/O besides ReadJobSpecFile (also used by
// ParseJobSpecFile) reading the file.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "base/status.h"

namespace gantry {

enum class JobKind { kTrain, kCommand, kServe };

struct ResourcesSpec {
  int ranks = 1;
  int gpus_per_rank = 0;
  int cpus_per_rank = 1;
  std::string priority = "normal";  // "low" | "normal" | "high"
  std::string tenant = "default";
  std::map<std::string, std::string> labels;  // placement constraints (rack, zone, ...)
  friend bool operator==(const ResourcesSpec&, const ResourcesSpec&) = default;
};

struct ModelSpec {
  std::string type;  // "mlp" | "cnn" | "gpt"
  // mlp: layer widths including input and output, e.g. [784, 512, 512, 10].
  std::vector<int> widths;
  std::string activation = "relu";  // mlp: relu | sigmoid | tanh | gelu
  // cnn: input [channels, height, width]; conv stack; linear head to `classes`.
  std::vector<int> input;     // e.g. [1, 28, 28]
  std::vector<int> channels;  // output channels per conv layer, e.g. [16, 32]
  int kernel = 3;             // conv kernel size (padding kernel/2, stride 1)
  std::string pool = "max";   // after each conv+relu: "max" | "avg" | "none" (2x2 stride 2)
  int classes = 10;
  // gpt
  int vocab = 0;
  int context = 0;
  int d_model = 0;
  int layers = 0;
  int heads = 0;
  int mlp = 0;  // hidden width of the MLP block (default 4 * d_model)
  // loss: "cross_entropy" (default) | "mse" | "hinge" (mlp only for mse/hinge)
  std::string loss = "cross_entropy";
  friend bool operator==(const ModelSpec&, const ModelSpec&) = default;
};

struct DataSpec {
  // "synthetic" | "file:///path/tokens.bin" | "/path" | "mnist:///dir" | "ceph://pool/prefix?..."
  std::string uri = "synthetic";
  std::string format;  // tokens_u16 | tokens_u32 | text | mnist | tensors (inferred when empty)
  int batch_per_rank = 8;
  uint64_t seed = 1;
  int64_t synthetic_samples = 8192;  // records in a synthetic dataset
  friend bool operator==(const DataSpec&, const DataSpec&) = default;
};

struct OptimizerSpec {
  std::string type = "adamw";  // sgd | momentum | adam | adamw
  double lr = 3e-4;
  double momentum = 0.9;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.0;
  int64_t warmup_steps = 0;
  std::string schedule = "constant";  // constant | cosine
  double min_lr_ratio = 0.1;          // cosine floor as a fraction of lr
  double grad_clip = 0.0;             // max global L2 norm; 0 = off
  friend bool operator==(const OptimizerSpec&, const OptimizerSpec&) = default;
};

struct TrainSpec {
  int64_t steps = 100;
  int64_t checkpoint_every = 0;  // 0 = only at the end
  int keep_last = 3;
  std::string checkpoint_uri;    // file:///dir, plain dir, or ceph://...
  int64_t log_every = 10;
  std::string device = "cpu";    // cpu | cuda | cuda:N
  int threads = 0;               // CPU threads per rank; 0 = automatic
  std::string precision = "f32";  // f32 | bf16 (matmuls in bf16, f32 accumulation; CPU)
  friend bool operator==(const TrainSpec&, const TrainSpec&) = default;
};

struct CommSpec {
  std::string backend = "auto";  // auto | tcp | shm | mpi | nccl
  double bucket_mb = 25.0;
  int timeout_s = 300;
  bool bf16_reduce = false;
  bool zero1 = false;
  friend bool operator==(const CommSpec&, const CommSpec&) = default;
};

struct CommandSpec {
  std::vector<std::string> argv;
  std::map<std::string, std::string> env;
  std::string workdir;
  friend bool operator==(const CommandSpec&, const CommandSpec&) = default;
};

struct ServeSpec {
  std::string model_dir;
  int shards = 1;
  int port = 8501;
  int max_batch = 32;
  int batch_timeout_ms = 5;
  friend bool operator==(const ServeSpec&, const ServeSpec&) = default;
};

struct RestartSpec {
  int max = 3;
  friend bool operator==(const RestartSpec&, const RestartSpec&) = default;
};

struct JobSpec {
  std::string name;
  JobKind kind = JobKind::kTrain;
  ResourcesSpec resources;
  ModelSpec model;
  DataSpec data;
  OptimizerSpec optimizer;
  TrainSpec train;
  CommSpec comm;
  CommandSpec command;
  ServeSpec serve;
  RestartSpec restarts;
  std::string source;  // file name (or "<string>") used in error messages
  friend bool operator==(const JobSpec&, const JobSpec&) = default;
};

const char* JobKindName(JobKind kind);

// Parses and validates. `source_name` prefixes every error message.
StatusOr<JobSpec> ParseJobSpec(const std::string& yaml_text,
                               const std::string& source_name = "<string>");
// The text of a spec file: a directory or an unreadable path is an error naming it. Read
// once (a pipe such as <(envsubst < job.yaml) can be read only once).
StatusOr<std::string> ReadJobSpecFile(const std::string& path);
// ReadJobSpecFile, then ParseJobSpec.
StatusOr<JobSpec> ParseJobSpecFile(const std::string& path);
// Cross-field checks (d_model divisible by heads, widths >= 2 entries, ...); also run by Parse.
Status ValidateJobSpec(const JobSpec& spec);
// Canonical YAML (every field, defaults filled in); Parse(ToYaml(s)) == s.
std::string JobSpecToYaml(const JobSpec& spec);
// Every field JobSpecToYaml writes, as ("section.key", its value as flow YAML) in that order:
// ("model.heads", "8"), ("model.widths", "[784, 512, 10]"), ("name", "job"). What a job's
// ranks compare to find a rank started with another spec (train/trainer.cc).
std::vector<std::pair<std::string, std::string>> JobSpecFields(const JobSpec& spec);

}  // namespace gantry
