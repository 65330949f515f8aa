// Checkpoint metadata JSON (the `metadata` of manifest.json): encode and strict decode
// (nlohmann::ordered_json, keys in a fixed order so the bytes depend only on the content).
#include <cstdio>
#include <nlohmann/json.hpp>

#include "train/checkpoint.h"

namespace gantry::train {

using Json = nlohmann::ordered_json;

namespace {

std::string Hex64(uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(v));
  return buf;
}
std::string Hex32(uint32_t v) {
  char buf[9];
  std::snprintf(buf, sizeof(buf), "%08x", v);
  return buf;
}

Json ModelToJson(const ModelSpec& m) {
  return Json{{"type", m.type},       {"widths", m.widths},     {"activation", m.activation},
              {"input", m.input},     {"channels", m.channels}, {"kernel", m.kernel},
              {"pool", m.pool},       {"classes", m.classes},   {"vocab", m.vocab},
              {"context", m.context}, {"d_model", m.d_model},   {"layers", m.layers},
              {"heads", m.heads},     {"mlp", m.mlp},           {"loss", m.loss}};
}
void ModelFromJson(const Json& j, ModelSpec* m) {
  j.at("type").get_to(m->type);
  j.at("widths").get_to(m->widths);
  j.at("activation").get_to(m->activation);
  j.at("input").get_to(m->input);
  j.at("channels").get_to(m->channels);
  j.at("kernel").get_to(m->kernel);
  j.at("pool").get_to(m->pool);
  j.at("classes").get_to(m->classes);
  j.at("vocab").get_to(m->vocab);
  j.at("context").get_to(m->context);
  j.at("d_model").get_to(m->d_model);
  j.at("layers").get_to(m->layers);
  j.at("heads").get_to(m->heads);
  j.at("mlp").get_to(m->mlp);
  j.at("loss").get_to(m->loss);
}

Json OptimizerToJson(const OptimizerSpec& o) {
  return Json{{"type", o.type},
              {"lr", o.lr},
              {"momentum", o.momentum},
              {"beta1", o.beta1},
              {"beta2", o.beta2},
              {"eps", o.eps},
              {"weight_decay", o.weight_decay},
              {"warmup_steps", o.warmup_steps},
              {"schedule", o.schedule},
              {"min_lr_ratio", o.min_lr_ratio},
              {"grad_clip", o.grad_clip}};
}
void OptimizerFromJson(const Json& j, OptimizerSpec* o) {
  j.at("type").get_to(o->type);
  j.at("lr").get_to(o->lr);
  j.at("momentum").get_to(o->momentum);
  j.at("beta1").get_to(o->beta1);
  j.at("beta2").get_to(o->beta2);
  j.at("eps").get_to(o->eps);
  j.at("weight_decay").get_to(o->weight_decay);
  j.at("warmup_steps").get_to(o->warmup_steps);
  j.at("schedule").get_to(o->schedule);
  j.at("min_lr_ratio").get_to(o->min_lr_ratio);
  j.at("grad_clip").get_to(o->grad_clip);
}

}  // namespace

std::string EncodeManifest(const CheckpointMeta& meta, const std::vector<TensorRecord>& tensors,
                           uint64_t data_bytes) {
  Json rng = Json::array();
  for (uint64_t w : meta.rng) rng.push_back(Hex64(w));
  Json table = Json::array();
  for (const TensorRecord& t : tensors) {
    table.push_back(Json{{"name", t.name},
                         {"dtype", kernels::DTypeName(t.dtype)},
                         {"shape", t.shape},
                         {"offset", t.offset},
                         {"nbytes", t.nbytes},
                         {"crc32c", Hex32(t.crc32c)}});
  }
  Json j{{"magic", kCheckpointMagic},
         {"format_version", kCheckpointFormatVersion},
         {"job", meta.job},
         {"step", meta.step},
         {"epoch", meta.data.epoch},
         {"data_position", Json{{"epoch", meta.data.epoch}, {"batch", meta.data.batch}}},
         {"rng", Json{{"algorithm", "xoshiro256**"}, {"state", rng}}},
         {"tokenizer", meta.tokenizer},
         {"data", Json{{"uri", meta.data_uri},
                       {"seed", meta.data_seed},
                       {"batch_per_rank", meta.batch_per_rank},
                       {"world_size", meta.world_size}}},
         {"model", ModelToJson(meta.model)},
         {"optimizer", OptimizerToJson(meta.optimizer)},
         {"data_file", "data.bin"},
         {"data_bytes", data_bytes},
         {"checksum", "crc32c"},
         {"tensors", table}};
  return j.dump(2) + "\n";
}

Status DecodeManifest(const std::string& json, const std::string& source, CheckpointMeta* meta,
                      std::vector<TensorRecord>* tensors, uint64_t* data_bytes) {
  Json j = Json::parse(json, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return DataLossError(source + ": manifest is not valid JSON");
  try {
    if (j.at("magic").get<std::string>() != kCheckpointMagic) {
      return DataLossError(source + ": not a Gantry checkpoint manifest (bad magic)");
    }
    const int version = j.at("format_version").get<int>();
    if (version != kCheckpointFormatVersion) {
      // Not damage: another Gantry wrote it. Stop rather than fall back to older checkpoints
      // (which would silently throw away its progress).
      return FailedPreconditionError(
          source + ": checkpoint format version " + std::to_string(version) +
          " is not supported (this build reads " + std::to_string(kCheckpointFormatVersion) +
          "); resume with the Gantry that wrote it, or use another checkpoint directory");
    }
    j.at("job").get_to(meta->job);
    j.at("step").get_to(meta->step);
    j.at("data_position").at("epoch").get_to(meta->data.epoch);
    j.at("data_position").at("batch").get_to(meta->data.batch);
    const Json& rng = j.at("rng").at("state");
    if (rng.size() != meta->rng.size()) return DataLossError(source + ": rng.state needs 4 words");
    for (size_t i = 0; i < meta->rng.size(); ++i) {
      meta->rng[i] = std::stoull(rng[i].get<std::string>(), nullptr, 16);
    }
    j.at("tokenizer").get_to(meta->tokenizer);
    if (j.contains("data")) {  // since the data settings were recorded
      const Json& d = j.at("data");
      d.at("uri").get_to(meta->data_uri);
      d.at("seed").get_to(meta->data_seed);
      d.at("batch_per_rank").get_to(meta->batch_per_rank);
      d.at("world_size").get_to(meta->world_size);
    }
    ModelFromJson(j.at("model"), &meta->model);
    OptimizerFromJson(j.at("optimizer"), &meta->optimizer);
    j.at("data_bytes").get_to(*data_bytes);
    tensors->clear();
    for (const Json& t : j.at("tensors")) {
      TensorRecord r;
      t.at("name").get_to(r.name);
      auto dtype = kernels::ParseDType(t.at("dtype").get<std::string>());
      if (!dtype.ok()) return DataLossError(source + ": tensor '" + r.name + "': " +
                                            dtype.status().message());
      r.dtype = *dtype;
      t.at("shape").get_to(r.shape);
      t.at("offset").get_to(r.offset);
      t.at("nbytes").get_to(r.nbytes);
      r.crc32c = uint32_t(std::stoul(t.at("crc32c").get<std::string>(), nullptr, 16));
      tensors->push_back(std::move(r));
    }
  } catch (const std::exception& e) {
    return DataLossError(source + ": malformed manifest: " + e.what());
  }
  return OkStatus();
}

}  // namespace gantry::train
