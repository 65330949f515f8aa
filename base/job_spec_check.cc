// Job spec validation: ranges, enumerations, kind/type-specific sections and cross-field
// rules. Collects every problem (one per line) so a user fixes a spec in one pass.
#include <algorithm>
#include <set>
#include <string>

#include "base/job_spec.h"
#include "base/job_spec_internal.h"

namespace gantry::job_spec_internal {
namespace {

constexpr int kMaxRanks = 65536;
constexpr int kMaxDim = 1 << 20;

std::string Quote(const std::string& s) { return "'" + job_spec_internal::Clip(s) + "'"; }

class Checker {
 public:
  Checker(const JobSpec& spec, const LineMap* lines) : spec_(spec), lines_(lines) {}

  void Fail(const std::string& path, const std::string& what) {
    std::string src = spec_.source.empty() ? "<spec>" : spec_.source;
    int line = Line(path);
    if (line > 0) src += ":" + std::to_string(line);
    errors_ += errors_.empty() ? "" : "\n";
    errors_ += src + ": " + (path.empty() ? "" : path + ": ") + what;
  }

  template <typename T>
  void Range(const std::string& path, T v, T lo, T hi, const char* hint = nullptr) {
    if (v >= lo && v <= hi) return;
    std::string what = "must be in [" + Num(lo) + ", " + Num(hi) + "], got " + Num(v);
    if (hint != nullptr) what += std::string(" (") + hint + ")";
    Fail(path, what);
  }

  // lo < v <= hi.
  void RangeOpen(const std::string& path, double v, double lo, double hi) {
    if (v > lo && v <= hi) return;
    Fail(path, "must be in (" + Num(lo) + ", " + Num(hi) + "], got " + Num(v));
  }

  void OneOf(const std::string& path, const std::string& v,
             std::initializer_list<const char*> options) {
    std::string list;
    for (const char* o : options) {
      if (v == o) return;
      list += list.empty() ? "" : ", ";
      list += o;
    }
    Fail(path, "unknown value " + Quote(v) + "; expected one of: " + list);
  }

  bool Present(const std::string& path) const {
    return lines_ != nullptr && lines_->count(path) > 0;
  }
  bool Parsed() const { return lines_ != nullptr; }

  Status Result() const {
    return errors_.empty() ? OkStatus() : InvalidArgumentError(errors_);
  }

  template <typename T>
  static std::string Num(T v) {
    if constexpr (std::is_floating_point_v<T>) {
      char buf[32];
      snprintf(buf, sizeof(buf), "%g", v);
      return buf;
    } else {
      return std::to_string(v);
    }
  }

 private:
  // The line of `path`, else of its closest recorded parent; 0 when unknown.
  int Line(std::string path) const {
    if (lines_ == nullptr) return 0;
    while (true) {
      if (auto it = lines_->find(path); it != lines_->end()) return it->second;
      if (path.empty()) return 0;
      size_t cut = path.find_last_of(".[");
      path = cut == std::string::npos ? "" : path.substr(0, cut);
    }
  }

  const JobSpec& spec_;
  const LineMap* lines_;
  std::string errors_;
};

bool IsDnsLabel(const std::string& s) {
  if (s.empty() || s.size() > 63) return false;
  for (char c : s) {
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-')) return false;
  }
  return s.front() != '-' && s.back() != '-';
}

bool IsEnvName(const std::string& s) {
  if (s.empty() || (s[0] >= '0' && s[0] <= '9')) return false;
  return std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
  });
}

// "synthetic", a path, or one of `schemes` followed by "://" and something.
void CheckUri(Checker& c, const std::string& path, const std::string& uri,
              std::initializer_list<const char*> schemes, bool allow_synthetic) {
  if (allow_synthetic && uri == "synthetic") return;
  size_t sep = uri.find("://");
  if (sep == std::string::npos) return;  // a plain path
  std::string scheme = uri.substr(0, sep);
  std::string list;
  for (const char* s : schemes) {
    if (scheme == s) {
      if (uri.size() == sep + 3) c.Fail(path, "URI " + Quote(uri) + " has nothing after '://'");
      return;
    }
    list += list.empty() ? "" : ", ";
    list += std::string(s) + "://";
  }
  c.Fail(path, "unsupported URI scheme " + Quote(scheme) + " in " + Quote(uri) +
                   "; expected a path or " + list);
}

void CheckResources(Checker& c, const ResourcesSpec& r) {
  c.Range("resources.ranks", r.ranks, 1, kMaxRanks);
  c.Range("resources.gpus_per_rank", r.gpus_per_rank, 0, 64);
  c.Range("resources.cpus_per_rank", r.cpus_per_rank, 1, 4096);
  c.OneOf("resources.priority", r.priority, {"low", "normal", "high"});
  if (!IsDnsLabel(r.tenant)) {
    c.Fail("resources.tenant", "must be lowercase letters, digits and '-' (at most 63), got " +
                                   Quote(r.tenant));
  }
  for (const auto& [k, v] : r.labels) {
    if (k.empty()) c.Fail("resources.labels", "label names must not be empty");
  }
}

// Fields each model type reads; any other model field given in the YAML is an error.
const std::set<std::string>& ModelFields(const std::string& type) {
  static const std::set<std::string> kMlp = {"type", "loss", "widths", "activation"};
  static const std::set<std::string> kCnn = {"type",     "loss",   "input", "channels",
                                             "kernel",   "pool",   "classes"};
  static const std::set<std::string> kGpt = {"type",   "loss",  "vocab", "context",
                                             "d_model", "layers", "heads", "mlp"};
  return type == "mlp" ? kMlp : type == "cnn" ? kCnn : kGpt;
}

void CheckGpt(Checker& c, const ModelSpec& m) {
  auto req = [&](const char* f, int v, int lo, int hi) {
    std::string path = std::string("model.") + f;
    if (v == 0 && !c.Present(path)) return c.Fail(path, "required for model type 'gpt'");
    c.Range(path, v, lo, hi);
  };
  req("vocab", m.vocab, 2, 1 << 24);
  req("context", m.context, 1, kMaxDim);
  req("d_model", m.d_model, 1, 65536);
  req("layers", m.layers, 1, 1024);
  req("heads", m.heads, 1, 1024);
  if (m.d_model > 0) {  // else mlp was not derived; d_model's own error says enough
    c.Range("model.mlp", m.mlp, 1, 1 << 20, "hidden width of the MLP block; default 4*d_model");
  }
  if (m.heads > 0 && m.d_model > 0 && m.d_model % m.heads != 0) {
    c.Fail("model.d_model", "model.d_model (" + std::to_string(m.d_model) +
                                ") must be divisible by model.heads (" +
                                std::to_string(m.heads) + ")");
  }
  if (m.loss != "cross_entropy") c.Fail("model.loss", "gpt supports only 'cross_entropy'");
}

void CheckCnn(Checker& c, const ModelSpec& m) {
  if (m.input.size() != 3) {
    c.Fail("model.input", "must be [channels, height, width], e.g. [1, 28, 28]; got " +
                              std::to_string(m.input.size()) + " entries");
  }
  for (size_t i = 0; i < m.input.size(); ++i) {
    c.Range("model.input[" + std::to_string(i) + "]", m.input[i], 1, 65536);
  }
  if (m.channels.empty()) c.Fail("model.channels", "needs at least one conv layer, e.g. [16, 32]");
  for (size_t i = 0; i < m.channels.size(); ++i) {
    c.Range("model.channels[" + std::to_string(i) + "]", m.channels[i], 1, 65536);
  }
  if (m.kernel < 1 || m.kernel > 15 || m.kernel % 2 == 0) {
    c.Fail("model.kernel", "must be odd and in [1, 15] ('same' padding), got " +
                               std::to_string(m.kernel));
  }
  c.OneOf("model.pool", m.pool, {"max", "avg", "none"});
  c.Range("model.classes", m.classes, 2, 1 << 20);
  if (m.input.size() == 3 && m.pool != "none") {
    int h = m.input[1], w = m.input[2];
    for (size_t i = 0; i < m.channels.size(); ++i) h /= 2, w /= 2;
    if (h < 1 || w < 1) {
      c.Fail("model.channels", std::to_string(m.channels.size()) + " conv+pool stages shrink " +
                                   std::to_string(m.input[1]) + "x" + std::to_string(m.input[2]) +
                                   " below 1x1: use fewer layers or pool: none");
    }
  }
  if (m.loss != "cross_entropy") c.Fail("model.loss", "cnn supports only 'cross_entropy'");
}

void CheckModel(Checker& c, const ModelSpec& m) {
  if (m.type.empty()) {
    return c.Fail("model.type", "required: one of mlp, cnn, gpt");
  }
  c.OneOf("model.type", m.type, {"mlp", "cnn", "gpt"});
  if (m.type != "mlp" && m.type != "cnn" && m.type != "gpt") return;
  for (const char* f : {"widths", "activation", "input", "channels", "kernel", "pool",
                        "classes", "vocab", "context", "d_model", "layers", "heads", "mlp"}) {
    std::string path = std::string("model.") + f;
    if (c.Present(path) && !ModelFields(m.type).count(f)) {
      c.Fail(path, "not used by model type " + Quote(m.type) + "; remove it");
    }
  }
  c.OneOf("model.loss", m.loss, {"cross_entropy", "mse", "hinge"});
  if (m.type == "gpt") return CheckGpt(c, m);
  if (m.type == "cnn") return CheckCnn(c, m);
  if (m.widths.size() < 2) {
    c.Fail("model.widths", "needs at least 2 widths (input and output), e.g. [784, 512, 10]; got " +
                               std::to_string(m.widths.size()));
  }
  for (size_t i = 0; i < m.widths.size(); ++i) {
    c.Range("model.widths[" + std::to_string(i) + "]", m.widths[i], 1, kMaxDim);
  }
  c.OneOf("model.activation", m.activation, {"relu", "sigmoid", "tanh", "gelu"});
  if (m.loss != "mse" && m.widths.size() >= 2 && m.widths.back() < 2) {
    c.Fail("model.widths", m.loss + " needs at least 2 output classes (last width)");
  }
}

void CheckTraining(Checker& c, const JobSpec& s) {
  const DataSpec& d = s.data;
  if (d.uri.empty()) c.Fail("data.uri", "must not be empty (use 'synthetic' for random data)");
  CheckUri(c, "data.uri", d.uri, {"file", "mnist", "ceph"}, true);
  if (!d.format.empty()) {
    c.OneOf("data.format", d.format, {"tokens_u16", "tokens_u32", "text", "mnist", "tensors"});
  }
  c.Range("data.batch_per_rank", d.batch_per_rank, 1, kMaxDim);
  c.Range<int64_t>("data.synthetic_samples", d.synthetic_samples, 1, int64_t(1) << 32);

  const OptimizerSpec& o = s.optimizer;
  c.OneOf("optimizer.type", o.type, {"sgd", "momentum", "adam", "adamw"});
  c.RangeOpen("optimizer.lr", o.lr, 0.0, 10.0);
  c.Range("optimizer.momentum", o.momentum, 0.0, 0.9999);
  c.Range("optimizer.beta1", o.beta1, 0.0, 0.9999);
  c.Range("optimizer.beta2", o.beta2, 0.0, 0.99999);
  c.RangeOpen("optimizer.eps", o.eps, 0.0, 1.0);
  c.Range("optimizer.weight_decay", o.weight_decay, 0.0, 10.0);
  // Against train.steps only when that is valid itself (else its own error says it all).
  c.Range<int64_t>("optimizer.warmup_steps", o.warmup_steps, 0,
                   std::max<int64_t>(s.train.steps, 0) >= 1 ? s.train.steps : int64_t(1) << 40,
                   "warm-up cannot be longer than train.steps");
  c.OneOf("optimizer.schedule", o.schedule, {"constant", "cosine"});
  c.Range("optimizer.min_lr_ratio", o.min_lr_ratio, 0.0, 1.0);
  c.Range("optimizer.grad_clip", o.grad_clip, 0.0, 1e6, "0 turns clipping off");

  const TrainSpec& t = s.train;
  c.Range<int64_t>("train.steps", t.steps, 1, int64_t(1) << 40);
  c.Range<int64_t>("train.checkpoint_every", t.checkpoint_every, 0, int64_t(1) << 40,
                   "0 = only at the end");
  c.Range("train.keep_last", t.keep_last, 1, 1000);
  CheckUri(c, "train.checkpoint_uri", t.checkpoint_uri, {"file", "ceph"}, false);
  c.Range<int64_t>("train.log_every", t.log_every, 1, int64_t(1) << 40);
  c.Range("train.threads", t.threads, 0, 4096, "0 = automatic");
  bool cuda = t.device == "cuda" || t.device.rfind("cuda:", 0) == 0;
  if (t.device != "cpu" && !cuda) {
    c.Fail("train.device", "unknown device " + Quote(t.device) + "; expected cpu, cuda or cuda:N");
  } else if (t.device.rfind("cuda:", 0) == 0) {
    std::string n = t.device.substr(5);
    if (n.empty() || n.size() > 2 || !std::all_of(n.begin(), n.end(), ::isdigit)) {
      c.Fail("train.device", "expected cuda:N with N a device index, got " + Quote(t.device));
    }
  }
  c.OneOf("train.precision", t.precision, {"f32", "bf16"});
  if (cuda && s.resources.gpus_per_rank < 1) {
    c.Fail("train.device", "device " + Quote(t.device) +
                               " needs resources.gpus_per_rank >= 1 (it is 0)");
  }
  if (s.comm.backend == "nccl" && !cuda) {
    c.Fail("comm.backend", "'nccl' needs train.device cuda; use tcp, shm, mpi or auto on cpu");
  }
}

void CheckComm(Checker& c, const CommSpec& m) {
  c.OneOf("comm.backend", m.backend, {"auto", "tcp", "shm", "mpi", "nccl"});
  c.RangeOpen("comm.bucket_mb", m.bucket_mb, 0.0, 4096.0);
  c.Range("comm.timeout_s", m.timeout_s, 1, 7 * 86400);
}

void CheckCommand(Checker& c, const CommandSpec& m) {
  if (m.argv.empty()) {
    return c.Fail("command.argv",
                  "required for kind 'command': the program and its arguments, "
                  "e.g. [python3, train.py]");
  }
  if (m.argv[0].empty()) c.Fail("command.argv[0]", "the program name must not be empty");
  for (const auto& [k, v] : m.env) {
    if (!IsEnvName(k)) {
      c.Fail("command.env." + k, "not a valid environment variable name (letters, digits, _)");
    }
  }
}

void CheckServe(Checker& c, const ServeSpec& m) {
  if (m.model_dir.empty()) {
    c.Fail("serve.model_dir", "required for kind 'serve': the directory written by gantry export");
  }
  c.Range("serve.shards", m.shards, 1, 1024);
  c.Range("serve.port", m.port, 1, 65535);
  c.Range("serve.max_batch", m.max_batch, 1, 1 << 16);
  c.Range("serve.batch_timeout_ms", m.batch_timeout_ms, 0, 60000);
}

// Sections each kind reads; a parsed spec naming another section is an error.
void CheckSections(Checker& c, const JobSpec& s) {
  static const std::set<std::string> kAll = {"resources", "model", "data", "optimizer", "train",
                                             "comm", "command", "serve", "restarts"};
  static const std::set<std::string> kTrain = {"resources", "model", "data", "optimizer",
                                               "train", "comm", "restarts"};
  static const std::set<std::string> kCommand = {"resources", "command", "restarts"};
  static const std::set<std::string> kServe = {"resources", "serve", "restarts"};
  const auto& allowed = s.kind == JobKind::kTrain     ? kTrain
                        : s.kind == JobKind::kCommand ? kCommand
                                                      : kServe;
  std::string kind = JobKindName(s.kind);
  for (const auto& section : kAll) {
    if (c.Present(section) && !allowed.count(section)) {
      c.Fail(section, "not used by kind " + Quote(kind) + "; remove it");
    }
  }
  const char* required = s.kind == JobKind::kTrain     ? "model"
                         : s.kind == JobKind::kCommand ? "command"
                                                       : "serve";
  if (c.Parsed() && !c.Present(required)) {
    c.Fail("", std::string("section '") + required + "' is required for kind " + Quote(kind));
  }
}

}  // namespace

Status Validate(const JobSpec& s, const LineMap* lines) {
  Checker c(s, lines);
  if (lines != nullptr && !lines->count("kind")) {
    c.Fail("kind", "required: train, command or serve");
  }
  if (s.name.empty() && !(lines != nullptr && lines->count("name"))) {
    c.Fail("name", "required: the job name, e.g. name: gpt-tiny");
  } else if (!IsDnsLabel(s.name)) {
    c.Fail("name", "must be lowercase letters, digits and '-', start and end with a letter or "
                   "digit, at most 63 characters (it names Kubernetes objects); got " +
                       Quote(s.name));
  }
  CheckSections(c, s);
  CheckResources(c, s.resources);
  c.Range("restarts.max", s.restarts.max, 0, 1000);
  switch (s.kind) {
    case JobKind::kTrain:
      if (!c.Parsed() || c.Present("model")) CheckModel(c, s.model);
      CheckTraining(c, s);
      CheckComm(c, s.comm);
      break;
    case JobKind::kCommand:
      if (!c.Parsed() || c.Present("command")) CheckCommand(c, s.command);
      break;
    case JobKind::kServe:
      if (!c.Parsed() || c.Present("serve")) CheckServe(c, s.serve);
      break;
  }
  return c.Result();
}

}  // namespace gantry::job_spec_internal
