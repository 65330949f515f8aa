// Job spec parsing: YAML structure and types (yaml-cpp), unknown-field detection, line table.
// Ranges, enumerations and cross-field rules live in job_spec_check.cc; YAML output in
// job_spec_yaml.cc.
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <set>
#include <sstream>
#include <vector>

#include "base/job_spec.h"
#include "base/job_spec_internal.h"
#include "base/logging.h"

namespace gantry {
namespace {

using job_spec_internal::LineMap;

// Like GANTRY_RETURN_IF_ERROR but without "at file:line": these errors are for the user.
#define GANTRY_SPEC_TRY(expr)       \
  do {                              \
    Status spec_status_ = (expr);   \
    if (!spec_status_.ok()) return spec_status_; \
  } while (0)

// Reads one value with its path and line; records the line for the validator.
struct Value {
  const YAML::Node& node;
  int line;
  std::string path;
};

using FieldReader = std::function<Status(const Value&)>;
struct FieldDef {
  const char* name;
  FieldReader read;
};

class Reader {
 public:
  explicit Reader(std::string source) : source_(std::move(source)) {}

  Status Error(int line, const std::string& path, const std::string& what) const {
    std::string loc = source_ + ":" + std::to_string(line) + ": ";
    if (!path.empty()) loc += path + ": ";
    return InvalidArgumentError(loc + what);
  }

  static std::string Describe(const YAML::Node& n) {
    switch (n.Type()) {
      case YAML::NodeType::Null: return "an empty value";
      case YAML::NodeType::Sequence: return "a list";
      case YAML::NodeType::Map: return "a mapping";
      case YAML::NodeType::Scalar:
        return (n.Tag() == "!" ? "the quoted string '" : "'") +
               job_spec_internal::Clip(n.Scalar()) + "'";
      default: return "nothing";
    }
  }

  Status Expect(const Value& v, const char* expected) const {
    return Error(v.line, v.path, std::string("expected ") + expected + ", got " +
                                     Describe(v.node));
  }

  // A plain (unquoted) scalar, for numbers and booleans.
  bool Plain(const Value& v) const { return v.node.IsScalar() && v.node.Tag() != "!"; }

  template <typename T>
  Status Int(const Value& v, T* out) {
    lines_[v.path] = v.line;
    const std::string kind = std::is_signed_v<T> ? "an integer" : "a non-negative integer";
    if (!Plain(v)) return Expect(v, kind.c_str());
    const std::string& s = v.node.Scalar();
    T value{};
    auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), value);
    if (ec == std::errc::result_out_of_range) {
      return Error(v.line, v.path, "'" + s + "' is out of range for this field (at most " +
                                       std::to_string(std::numeric_limits<T>::max()) + ")");
    }
    if (ec != std::errc() || ptr != s.data() + s.size()) return Expect(v, kind.c_str());
    *out = value;
    return OkStatus();
  }

  Status Double(const Value& v, double* out) {
    lines_[v.path] = v.line;
    if (!Plain(v)) return Expect(v, "a number");
    const std::string& s = v.node.Scalar();
    char* end = nullptr;
    double value = std::strtod(s.c_str(), &end);
    if (s.empty() || end != s.c_str() + s.size() || !std::isfinite(value)) {
      return Expect(v, "a finite number");
    }
    *out = value;
    return OkStatus();
  }

  Status Bool(const Value& v, bool* out) {
    lines_[v.path] = v.line;
    static const std::set<std::string> kTrue = {"true", "True", "TRUE", "yes", "on"};
    static const std::set<std::string> kFalse = {"false", "False", "FALSE", "no", "off"};
    if (Plain(v) && kTrue.count(v.node.Scalar())) return *out = true, OkStatus();
    if (Plain(v) && kFalse.count(v.node.Scalar())) return *out = false, OkStatus();
    return Expect(v, "true or false");
  }

  Status String(const Value& v, std::string* out) {
    lines_[v.path] = v.line;
    if (!v.node.IsScalar()) return Expect(v, "a string");
    *out = v.node.Scalar();
    return OkStatus();
  }

  Status IntList(const Value& v, std::vector<int>* out) {
    lines_[v.path] = v.line;
    if (!v.node.IsSequence()) return Expect(v, "a list of integers, e.g. [784, 512, 10]");
    out->clear();
    for (size_t i = 0; i < v.node.size(); ++i) {
      int x = 0;
      YAML::Node item = v.node[i];
      GANTRY_SPEC_TRY(Int(Item(v, item, i), &x));
      out->push_back(x);
    }
    return OkStatus();
  }

  Status StringList(const Value& v, std::vector<std::string>* out) {
    lines_[v.path] = v.line;
    if (!v.node.IsSequence()) return Expect(v, "a list of strings, e.g. [python3, train.py]");
    out->clear();
    for (size_t i = 0; i < v.node.size(); ++i) {
      YAML::Node item = v.node[i];
      std::string s;
      GANTRY_SPEC_TRY(String(Item(v, item, i), &s));
      out->push_back(std::move(s));
    }
    return OkStatus();
  }

  Status StringMap(const Value& v, std::map<std::string, std::string>* out) {
    lines_[v.path] = v.line;
    if (!v.node.IsMap()) return Expect(v, "a mapping of strings, e.g. {KEY: value}");
    out->clear();
    for (const auto& kv : v.node) {
      int line = LineOf(kv.first, v.line);
      if (!kv.first.IsScalar()) return Error(line, v.path, "keys must be strings");
      std::string key = kv.first.Scalar();
      std::string value;
      GANTRY_SPEC_TRY(String({kv.second, LineOf(kv.second, line), v.path + "." + key},
                                    &value));
      if (!out->emplace(key, value).second) {
        return Error(line, v.path + "." + key, "duplicate key");
      }
    }
    return OkStatus();
  }

  // Reads a mapping whose keys must all be in `fields`; unknown or repeated keys are errors.
  Status Map(const Value& v, const std::vector<FieldDef>& fields,
             std::set<std::string>* seen_out = nullptr) {
    lines_[v.path] = v.line;
    if (!v.node.IsMap()) return Expect(v, "a mapping of fields (key: value)");
    std::set<std::string> seen;
    for (const auto& kv : v.node) {
      int key_line = LineOf(kv.first, v.line);
      std::string key = kv.first.IsScalar() ? kv.first.Scalar() : "?";
      std::string path = v.path.empty() ? key : v.path + "." + key;
      const FieldDef* def = nullptr;
      for (const auto& f : fields) {
        if (key == f.name) def = &f;
      }
      if (def == nullptr) return Error(key_line, path, UnknownField(key, fields));
      if (!seen.insert(key).second) return Error(key_line, path, "field given twice");
      // An empty value's mark points past the key's line: blame the key instead.
      int value_line = kv.second.IsNull() ? key_line : LineOf(kv.second, key_line);
      GANTRY_SPEC_TRY(def->read({kv.second, value_line, path}));
      lines_[path] = key_line;  // errors about a whole field point at its key
    }
    if (seen_out != nullptr) *seen_out = std::move(seen);
    return OkStatus();
  }

  static int LineOf(const YAML::Node& n, int fallback) {
    YAML::Mark m = n.Mark();
    return m.is_null() ? fallback : m.line + 1;
  }

  LineMap& lines() { return lines_; }

 private:
  Value Item(const Value& list, const YAML::Node& item, size_t i) const {
    return {item, LineOf(item, list.line), list.path + "[" + std::to_string(i) + "]"};
  }

  static size_t EditDistance(const std::string& a, const std::string& b) {
    std::vector<size_t> row(b.size() + 1);
    for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
    for (size_t i = 1; i <= a.size(); ++i) {
      size_t diag = row[0];
      row[0] = i;
      for (size_t j = 1; j <= b.size(); ++j) {
        size_t up = row[j];
        row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] != b[j - 1])});
        diag = up;
      }
    }
    return row[b.size()];
  }

  static std::string UnknownField(const std::string& key, const std::vector<FieldDef>& fields) {
    std::string msg = "unknown field '" + key + "'";
    std::string best;
    size_t best_d = 3;  // suggest only close matches
    std::string all;
    for (const auto& f : fields) {
      size_t d = EditDistance(key, f.name);
      if (d < best_d) best_d = d, best = f.name;
      all += all.empty() ? "" : ", ";
      all += f.name;
    }
    if (!best.empty()) msg += " (did you mean '" + best + "'?)";
    return msg + "; expected one of: " + all;
  }

  std::string source_;
  LineMap lines_;
};

// Shorthands binding a field name to a destination.
#define GANTRY_FIELD(name, method, dest) \
  FieldDef { name, [&](const Value& v) { return r.method(v, dest); } }

Status ReadResources(Reader& r, const Value& v, ResourcesSpec* s) {
  return r.Map(v, {GANTRY_FIELD("ranks", Int, &s->ranks),
                   GANTRY_FIELD("gpus_per_rank", Int, &s->gpus_per_rank),
                   GANTRY_FIELD("cpus_per_rank", Int, &s->cpus_per_rank),
                   GANTRY_FIELD("priority", String, &s->priority),
                   GANTRY_FIELD("tenant", String, &s->tenant),
                   GANTRY_FIELD("labels", StringMap, &s->labels)});
}

Status ReadModel(Reader& r, const Value& v, ModelSpec* s) {
  s->mlp = -1;  // "not given": filled with 4 * d_model below
  GANTRY_SPEC_TRY(r.Map(v, {GANTRY_FIELD("type", String, &s->type),
                                   GANTRY_FIELD("widths", IntList, &s->widths),
                                   GANTRY_FIELD("activation", String, &s->activation),
                                   GANTRY_FIELD("input", IntList, &s->input),
                                   GANTRY_FIELD("channels", IntList, &s->channels),
                                   GANTRY_FIELD("kernel", Int, &s->kernel),
                                   GANTRY_FIELD("pool", String, &s->pool),
                                   GANTRY_FIELD("classes", Int, &s->classes),
                                   GANTRY_FIELD("vocab", Int, &s->vocab),
                                   GANTRY_FIELD("context", Int, &s->context),
                                   GANTRY_FIELD("d_model", Int, &s->d_model),
                                   GANTRY_FIELD("layers", Int, &s->layers),
                                   GANTRY_FIELD("heads", Int, &s->heads),
                                   GANTRY_FIELD("mlp", Int, &s->mlp),
                                   GANTRY_FIELD("loss", String, &s->loss)}));
  if (s->mlp == -1) s->mlp = s->type == "gpt" ? 4 * s->d_model : 0;
  return OkStatus();
}

Status ReadData(Reader& r, const Value& v, DataSpec* s) {
  return r.Map(v, {GANTRY_FIELD("uri", String, &s->uri),
                   GANTRY_FIELD("format", String, &s->format),
                   GANTRY_FIELD("batch_per_rank", Int, &s->batch_per_rank),
                   GANTRY_FIELD("seed", Int, &s->seed),
                   GANTRY_FIELD("synthetic_samples", Int, &s->synthetic_samples)});
}

Status ReadOptimizer(Reader& r, const Value& v, OptimizerSpec* s) {
  return r.Map(v, {GANTRY_FIELD("type", String, &s->type),
                   GANTRY_FIELD("lr", Double, &s->lr),
                   GANTRY_FIELD("momentum", Double, &s->momentum),
                   GANTRY_FIELD("beta1", Double, &s->beta1),
                   GANTRY_FIELD("beta2", Double, &s->beta2),
                   GANTRY_FIELD("eps", Double, &s->eps),
                   GANTRY_FIELD("weight_decay", Double, &s->weight_decay),
                   GANTRY_FIELD("warmup_steps", Int, &s->warmup_steps),
                   GANTRY_FIELD("schedule", String, &s->schedule),
                   GANTRY_FIELD("min_lr_ratio", Double, &s->min_lr_ratio),
                   GANTRY_FIELD("grad_clip", Double, &s->grad_clip)});
}

Status ReadTrain(Reader& r, const Value& v, TrainSpec* s) {
  return r.Map(v, {GANTRY_FIELD("steps", Int, &s->steps),
                   GANTRY_FIELD("checkpoint_every", Int, &s->checkpoint_every),
                   GANTRY_FIELD("keep_last", Int, &s->keep_last),
                   GANTRY_FIELD("checkpoint_uri", String, &s->checkpoint_uri),
                   GANTRY_FIELD("log_every", Int, &s->log_every),
                   GANTRY_FIELD("device", String, &s->device),
                   GANTRY_FIELD("threads", Int, &s->threads),
                   GANTRY_FIELD("precision", String, &s->precision)});
}

Status ReadComm(Reader& r, const Value& v, CommSpec* s) {
  return r.Map(v, {GANTRY_FIELD("backend", String, &s->backend),
                   GANTRY_FIELD("bucket_mb", Double, &s->bucket_mb),
                   GANTRY_FIELD("timeout_s", Int, &s->timeout_s),
                   GANTRY_FIELD("bf16_reduce", Bool, &s->bf16_reduce),
                   GANTRY_FIELD("zero1", Bool, &s->zero1)});
}

Status ReadCommand(Reader& r, const Value& v, CommandSpec* s) {
  return r.Map(v, {GANTRY_FIELD("argv", StringList, &s->argv),
                   GANTRY_FIELD("env", StringMap, &s->env),
                   GANTRY_FIELD("workdir", String, &s->workdir)});
}

Status ReadServe(Reader& r, const Value& v, ServeSpec* s) {
  return r.Map(v, {GANTRY_FIELD("model_dir", String, &s->model_dir),
                   GANTRY_FIELD("shards", Int, &s->shards),
                   GANTRY_FIELD("port", Int, &s->port),
                   GANTRY_FIELD("max_batch", Int, &s->max_batch),
                   GANTRY_FIELD("batch_timeout_ms", Int, &s->batch_timeout_ms)});
}

Status ReadRestarts(Reader& r, const Value& v, RestartSpec* s) {
  return r.Map(v, {GANTRY_FIELD("max", Int, &s->max)});
}

Status ReadKind(Reader& r, const Value& v, JobKind* kind) {
  std::string text;
  GANTRY_SPEC_TRY(r.String(v, &text));
  for (JobKind k : {JobKind::kTrain, JobKind::kCommand, JobKind::kServe}) {
    if (text == JobKindName(k)) return *kind = k, OkStatus();
  }
  return r.Error(v.line, v.path, "unknown kind '" + text + "': expected train, command or serve");
}

#define GANTRY_SECTION(name, fn, dest) \
  FieldDef { name, [&](const Value& v) { return fn(r, v, dest); } }

Status ReadJob(Reader& r, const YAML::Node& root, JobSpec* spec) {
  return r.Map({root, Reader::LineOf(root, 1), ""},
               {GANTRY_FIELD("name", String, &spec->name),
                GANTRY_SECTION("kind", ReadKind, &spec->kind),
                GANTRY_SECTION("resources", ReadResources, &spec->resources),
                GANTRY_SECTION("model", ReadModel, &spec->model),
                GANTRY_SECTION("data", ReadData, &spec->data),
                GANTRY_SECTION("optimizer", ReadOptimizer, &spec->optimizer),
                GANTRY_SECTION("train", ReadTrain, &spec->train),
                GANTRY_SECTION("comm", ReadComm, &spec->comm),
                GANTRY_SECTION("command", ReadCommand, &spec->command),
                GANTRY_SECTION("serve", ReadServe, &spec->serve),
                GANTRY_SECTION("restarts", ReadRestarts, &spec->restarts)});
}

#undef GANTRY_FIELD
#undef GANTRY_SECTION

}  // namespace

const char* JobKindName(JobKind kind) {
  switch (kind) {
    case JobKind::kTrain: return "train";
    case JobKind::kCommand: return "command";
    case JobKind::kServe: return "serve";
  }
  return "unknown";
}

StatusOr<JobSpec> ParseJobSpec(const std::string& yaml_text, const std::string& source_name) {
  Reader reader(source_name);
  // YAML is Unicode text: other bytes (a Latin-1 'é') are named with their line here rather
  // than passing locally and failing as a malformed message on the way to the coordinator.
  if (const size_t bad = FirstInvalidUtf8(yaml_text); bad != std::string::npos) {
    const int line = 1 + int(std::count(yaml_text.begin(), yaml_text.begin() + bad, '\n'));
    char hex[8];
    std::snprintf(hex, sizeof(hex), "0x%02X", unsigned(static_cast<unsigned char>(yaml_text[bad])));
    const bool utf16 = yaml_text.size() >= 2 &&
                       ((yaml_text[0] == '\xFF' && yaml_text[1] == '\xFE') ||
                        (yaml_text[0] == '\xFE' && yaml_text[1] == '\xFF'));
    return reader.Error(line, "", std::string(utf16 ? "UTF-16 text" : "not UTF-8 text") +
                                      " (byte " + hex + "): save the file as UTF-8");
  }
  YAML::Node root;
  try {
    std::vector<YAML::Node> docs = YAML::LoadAll(yaml_text);
    // Empty documents (a trailing '---', common in generated YAML) do not count.
    docs.erase(std::remove_if(docs.begin(), docs.end(),
                              [](const YAML::Node& d) { return d.IsNull(); }),
               docs.end());
    if (docs.size() > 1) {
      return reader.Error(docs[1].Mark().is_null() ? 1 : docs[1].Mark().line + 1, "",
                          "a job spec is one YAML document; this file holds " +
                              std::to_string(docs.size()) + " (remove the '---' separators)");
    }
    if (!docs.empty()) root = docs[0];
  } catch (const YAML::Exception& e) {
    int line = e.mark.is_null() ? 1 : e.mark.line + 1;
    return reader.Error(line, "", "invalid YAML: " + e.msg + " (column " +
                                      std::to_string(e.mark.column + 1) + ")");
  }
  if (!root.IsMap()) {
    return reader.Error(1, "", "a job spec must be a YAML mapping with at least 'name' and "
                               "'kind', got " + Reader::Describe(root));
  }
  JobSpec spec;
  spec.source = source_name;
  try {
    GANTRY_SPEC_TRY(ReadJob(reader, root, &spec));
  } catch (const YAML::Exception& e) {
    return reader.Error(e.mark.is_null() ? 1 : e.mark.line + 1, "", "invalid YAML: " + e.msg);
  }
  reader.lines()[""] = 1;
  GANTRY_SPEC_TRY(job_spec_internal::Validate(spec, &reader.lines()));
  return spec;
}

StatusOr<std::string> ReadJobSpecFile(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) {
    return InvalidArgumentError("job spec '" + path + "' is a directory, not a YAML file");
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return ErrnoError("cannot open job spec '" + path + "' (check the path)", errno);
  }
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) return ErrnoError("cannot read job spec '" + path + "'", errno);
  return text.str();
}

StatusOr<JobSpec> ParseJobSpecFile(const std::string& path) {
  GANTRY_ASSIGN_OR_RETURN(std::string text, ReadJobSpecFile(path));
  return ParseJobSpec(text, path);
}

Status ValidateJobSpec(const JobSpec& spec) {
  return job_spec_internal::Validate(spec, nullptr);
}

}  // namespace gantry

#undef GANTRY_SPEC_TRY
