// Canonical YAML for a JobSpec: every field the kind (and model type) reads, defaults filled
// in, in the documented order. ParseJobSpec(JobSpecToYaml(s)) gives back s.
#include <yaml-cpp/yaml.h>

#include <charconv>

#include "base/job_spec.h"

namespace gantry {
namespace {

// Shortest text that parses back to the same double (yaml-cpp's own output uses 17 digits).
std::string DoubleText(double v) {
  char buf[32];
  auto res = std::to_chars(buf, buf + sizeof(buf), v);
  return std::string(buf, res.ptr);
}

template <typename T>
void Put(YAML::Emitter& out, const char* key, const T& value) {
  out << YAML::Key << key << YAML::Value << value;
}

void PutDouble(YAML::Emitter& out, const char* key, double value) {
  out << YAML::Key << key << YAML::Value << DoubleText(value);
}

template <typename T>
void PutList(YAML::Emitter& out, const char* key, const std::vector<T>& values) {
  out << YAML::Key << key << YAML::Value << YAML::Flow << YAML::BeginSeq;
  for (const auto& v : values) out << v;
  out << YAML::EndSeq;
}

void PutMap(YAML::Emitter& out, const char* key, const std::map<std::string, std::string>& m) {
  out << YAML::Key << key << YAML::Value;
  if (m.empty()) out << YAML::Flow;  // "labels: {}" rather than a dangling block
  out << YAML::BeginMap;
  for (const auto& [k, v] : m) out << YAML::Key << k << YAML::Value << v;
  out << YAML::EndMap;
}

void EmitModel(YAML::Emitter& out, const ModelSpec& m) {
  out << YAML::Key << "model" << YAML::Value << YAML::BeginMap;
  Put(out, "type", m.type);
  if (m.type == "mlp") {
    PutList(out, "widths", m.widths);
    Put(out, "activation", m.activation);
  } else if (m.type == "cnn") {
    PutList(out, "input", m.input);
    PutList(out, "channels", m.channels);
    Put(out, "kernel", m.kernel);
    Put(out, "pool", m.pool);
    Put(out, "classes", m.classes);
  } else {
    Put(out, "vocab", m.vocab);
    Put(out, "context", m.context);
    Put(out, "d_model", m.d_model);
    Put(out, "layers", m.layers);
    Put(out, "heads", m.heads);
    Put(out, "mlp", m.mlp);
  }
  Put(out, "loss", m.loss);
  out << YAML::EndMap;
}

void EmitTraining(YAML::Emitter& out, const JobSpec& s) {
  EmitModel(out, s.model);
  const DataSpec& d = s.data;
  out << YAML::Key << "data" << YAML::Value << YAML::BeginMap;
  Put(out, "uri", d.uri);
  Put(out, "format", d.format);
  Put(out, "batch_per_rank", d.batch_per_rank);
  Put(out, "seed", d.seed);
  Put(out, "synthetic_samples", d.synthetic_samples);
  out << YAML::EndMap;

  const OptimizerSpec& o = s.optimizer;
  out << YAML::Key << "optimizer" << YAML::Value << YAML::BeginMap;
  Put(out, "type", o.type);
  PutDouble(out, "lr", o.lr);
  PutDouble(out, "momentum", o.momentum);
  PutDouble(out, "beta1", o.beta1);
  PutDouble(out, "beta2", o.beta2);
  PutDouble(out, "eps", o.eps);
  PutDouble(out, "weight_decay", o.weight_decay);
  Put(out, "warmup_steps", o.warmup_steps);
  Put(out, "schedule", o.schedule);
  PutDouble(out, "min_lr_ratio", o.min_lr_ratio);
  PutDouble(out, "grad_clip", o.grad_clip);
  out << YAML::EndMap;

  const TrainSpec& t = s.train;
  out << YAML::Key << "train" << YAML::Value << YAML::BeginMap;
  Put(out, "steps", t.steps);
  Put(out, "checkpoint_every", t.checkpoint_every);
  Put(out, "keep_last", t.keep_last);
  Put(out, "checkpoint_uri", t.checkpoint_uri);
  Put(out, "log_every", t.log_every);
  Put(out, "device", t.device);
  Put(out, "threads", t.threads);
  Put(out, "precision", t.precision);
  out << YAML::EndMap;

  const CommSpec& c = s.comm;
  out << YAML::Key << "comm" << YAML::Value << YAML::BeginMap;
  Put(out, "backend", c.backend);
  PutDouble(out, "bucket_mb", c.bucket_mb);
  Put(out, "timeout_s", c.timeout_s);
  Put(out, "bf16_reduce", c.bf16_reduce);
  Put(out, "zero1", c.zero1);
  out << YAML::EndMap;
}

}  // namespace

std::string JobSpecToYaml(const JobSpec& s) {
  YAML::Emitter out;
  out << YAML::BeginMap;
  Put(out, "name", s.name);
  Put(out, "kind", std::string(JobKindName(s.kind)));

  const ResourcesSpec& r = s.resources;
  out << YAML::Key << "resources" << YAML::Value << YAML::BeginMap;
  Put(out, "ranks", r.ranks);
  Put(out, "gpus_per_rank", r.gpus_per_rank);
  Put(out, "cpus_per_rank", r.cpus_per_rank);
  Put(out, "priority", r.priority);
  Put(out, "tenant", r.tenant);
  PutMap(out, "labels", r.labels);
  out << YAML::EndMap;

  switch (s.kind) {
    case JobKind::kTrain: EmitTraining(out, s); break;
    case JobKind::kCommand:
      out << YAML::Key << "command" << YAML::Value << YAML::BeginMap;
      PutList(out, "argv", s.command.argv);
      PutMap(out, "env", s.command.env);
      Put(out, "workdir", s.command.workdir);
      out << YAML::EndMap;
      break;
    case JobKind::kServe:
      out << YAML::Key << "serve" << YAML::Value << YAML::BeginMap;
      Put(out, "model_dir", s.serve.model_dir);
      Put(out, "shards", s.serve.shards);
      Put(out, "port", s.serve.port);
      Put(out, "max_batch", s.serve.max_batch);
      Put(out, "batch_timeout_ms", s.serve.batch_timeout_ms);
      out << YAML::EndMap;
      break;
  }
  out << YAML::Key << "restarts" << YAML::Value << YAML::BeginMap;
  Put(out, "max", s.restarts.max);
  out << YAML::EndMap;
  out << YAML::EndMap;
  return std::string(out.c_str()) + "\n";
}

std::vector<std::pair<std::string, std::string>> JobSpecFields(const JobSpec& spec) {
  std::vector<std::pair<std::string, std::string>> fields;
  const YAML::Node root = YAML::Load(JobSpecToYaml(spec));
  for (const auto& top : root) {
    const std::string section = top.first.as<std::string>();
    if (!top.second.IsMap()) {
      fields.emplace_back(section, top.second.Scalar());
      continue;
    }
    for (const auto& field : top.second) {
      YAML::Emitter value;
      value << YAML::Flow << field.second;
      fields.emplace_back(section + "." + field.first.as<std::string>(), value.c_str());
    }
  }
  return fields;
}

}  // namespace gantry
