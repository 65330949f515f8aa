// Checkpointer: save (data, then manifest, then latest, then prune) and verified load with
// fallback to older checkpoints.
#include "train/checkpoint.h"

#include <algorithm>
#include <cstdio>
#include <span>

#include "base/logging.h"
#include "storage/checksum.h"

namespace gantry::train {

namespace {
constexpr char kManifest[] = "/manifest.json";
constexpr char kData[] = "/data.bin";
constexpr char kLatest[] = "latest";
}  // namespace

std::string CheckpointName(int64_t step) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "ckpt-%06lld", static_cast<long long>(step));
  return buf;
}

int64_t CheckpointStep(const std::string& name) {
  if (name.rfind("ckpt-", 0) != 0 || name.size() <= 5) return -1;
  int64_t step = 0;
  for (size_t i = 5; i < name.size(); ++i) {
    if (name[i] < '0' || name[i] > '9' || step > (int64_t(1) << 50)) return -1;
    step = step * 10 + (name[i] - '0');
  }
  return step;
}

const TensorRecord* LoadedCheckpoint::Find(const std::string& tensor) const {
  for (const TensorRecord& t : tensors) {
    if (t.name == tensor) return &t;
  }
  return nullptr;
}

Status LoadedCheckpoint::Restore(const std::vector<NamedTensor>& dst) const {
  for (const NamedTensor& d : dst) {
    const TensorRecord* r = Find(d.name);
    if (r == nullptr) {
      return NotFoundError("checkpoint " + name + " has no tensor '" + d.name +
                           "': it was written by a different model or optimizer");
    }
    if (r->dtype != d.tensor.dtype() || r->shape != d.tensor.shape()) {
      return InvalidArgumentError("checkpoint " + name + ": tensor '" + d.name + "' is " +
                                  kernels::DTypeName(r->dtype) + kernels::ShapeToString(r->shape) +
                                  " but the model needs " + d.tensor.ToString());
    }
    void* src = const_cast<char*>(data.data()) + r->offset;
    kernels::Tensor dst_tensor = d.tensor;
    GANTRY_RETURN_IF_ERROR(
        kernels::Copy(kernels::Tensor::Wrap(src, r->shape, r->dtype), dst_tensor));
  }
  return OkStatus();
}

StatusOr<std::unique_ptr<Checkpointer>> Checkpointer::Open(const std::string& uri, int keep_last) {
  if (uri.empty()) {
    return InvalidArgumentError(
        "no checkpoint location: set train.checkpoint_uri or pass "
        "--checkpoint-dir");
  }
  GANTRY_ASSIGN_OR_RETURN(std::unique_ptr<storage::ObjectStore> store,
                          storage::OpenObjectStore(uri));
  return std::make_unique<Checkpointer>(std::move(store), keep_last);
}

Status Checkpointer::Save(const CheckpointMeta& meta, const std::vector<NamedTensor>& tensors) {
  const std::string name = CheckpointName(meta.step);
  std::vector<TensorRecord> records;
  uint64_t total = 0;
  for (const NamedTensor& t : tensors) {
    TensorRecord r;
    r.name = t.name;
    r.dtype = t.tensor.dtype();
    r.shape = t.tensor.shape();
    r.offset = total;
    r.nbytes = t.tensor.nbytes();
    total += r.nbytes;
    records.push_back(std::move(r));
  }
  if (staging_.size() < total) staging_.resize(total);
  for (size_t i = 0; i < tensors.size(); ++i) {
    TensorRecord& r = records[i];
    std::byte* dst = staging_.data() + r.offset;
    kernels::Tensor host = kernels::Tensor::Wrap(dst, r.shape, r.dtype);
    GANTRY_RETURN_IF_ERROR(kernels::Copy(tensors[i].tensor, host));
    r.crc32c = storage::Crc32c(std::span<const std::byte>(dst, r.nbytes));
  }
  // Uncommit any earlier checkpoint of this step before its data is replaced.
  GANTRY_ASSIGN_OR_RETURN(bool exists, store_->Exists(name + kManifest));
  if (exists) GANTRY_RETURN_IF_ERROR(store_->Remove(name + kManifest));
  GANTRY_RETURN_IF_ERROR(
      store_->Put(name + kData, std::span<const std::byte>(staging_.data(), total)));
  GANTRY_RETURN_IF_ERROR(store_->Put(name + kManifest, EncodeManifest(meta, records, total)));
  GANTRY_RETURN_IF_ERROR(store_->Put(kLatest, name + "\n"));
  return Prune(meta.step);
}

StatusOr<std::vector<std::string>> Checkpointer::ListCommitted() {
  GANTRY_ASSIGN_OR_RETURN(std::vector<std::string> keys, store_->List("ckpt-"));
  std::vector<std::string> names;
  for (const std::string& k : keys) {
    const size_t slash = k.find('/');
    if (slash == std::string::npos || k.substr(slash) != kManifest) continue;
    std::string name = k.substr(0, slash);
    if (CheckpointStep(name) >= 0) names.push_back(std::move(name));
  }
  std::sort(names.begin(), names.end(), [](const std::string& a, const std::string& b) {
    return CheckpointStep(a) < CheckpointStep(b);
  });
  return names;
}

Status Checkpointer::Prune(int64_t newest_step) {
  GANTRY_ASSIGN_OR_RETURN(std::vector<std::string> committed, ListCommitted());
  std::vector<std::string> doomed;
  if (keep_last_ > 0 && committed.size() > size_t(keep_last_)) {
    doomed.assign(committed.begin(), committed.end() - keep_last_);
  }
  GANTRY_ASSIGN_OR_RETURN(std::vector<std::string> keys, store_->List("ckpt-"));
  for (const std::string& k : keys) {  // uncommitted leftovers older than the newest
    const std::string name = k.substr(0, k.find('/'));
    const int64_t step = CheckpointStep(name);
    if (step >= 0 && step < newest_step &&
        std::find(committed.begin(), committed.end(), name) == committed.end() &&
        std::find(doomed.begin(), doomed.end(), name) == doomed.end()) {
      doomed.push_back(name);
    }
  }
  for (const std::string& name : doomed) {
    // Manifest first: a half-removed checkpoint is then an uncommitted one, never a bad one.
    GANTRY_ASSIGN_OR_RETURN(bool has_manifest, store_->Exists(name + kManifest));
    if (has_manifest) GANTRY_RETURN_IF_ERROR(store_->Remove(name + kManifest));
    GANTRY_ASSIGN_OR_RETURN(std::vector<std::string> rest, store_->List(name + "/"));
    for (const std::string& k : rest) GANTRY_RETURN_IF_ERROR(store_->Remove(k));
  }
  return OkStatus();
}

StatusOr<LoadedCheckpoint> Checkpointer::Read(const std::string& name) {
  LoadedCheckpoint ck;
  ck.name = name;
  const std::string where = store_->Describe() + "/" + name;
  StatusOr<std::string> manifest = store_->GetAll(name + kManifest);
  if (!manifest.ok()) {
    if (manifest.status().code() == StatusCode::kNotFound) {
      return NotFoundError("checkpoint " + where + " has no manifest.json (not committed)");
    }
    return manifest.status();
  }
  uint64_t data_bytes = 0;
  GANTRY_RETURN_IF_ERROR(
      DecodeManifest(*manifest, where + kManifest, &ck.meta, &ck.tensors, &data_bytes));
  GANTRY_ASSIGN_OR_RETURN(ck.data, store_->GetAll(name + kData));
  if (ck.data.size() != data_bytes) {
    return DataLossError("checkpoint " + where + ": data.bin is " + std::to_string(ck.data.size()) +
                         " bytes but the manifest says " + std::to_string(data_bytes) +
                         " (truncated or replaced)");
  }
  for (const TensorRecord& t : ck.tensors) {
    const uint64_t expect = uint64_t(kernels::ShapeNumel(t.shape)) * kernels::DTypeSize(t.dtype);
    if (t.offset + t.nbytes > ck.data.size() || t.nbytes != expect) {
      return DataLossError("checkpoint " + where + ": tensor '" + t.name +
                           "' has a bad offset/size in the manifest");
    }
    const uint32_t crc = storage::Crc32c(std::string_view(ck.data).substr(t.offset, t.nbytes));
    if (crc != t.crc32c) {
      return DataLossError("checkpoint " + where + ": tensor '" + t.name +
                           "' fails its crc32c check (manifest " + storage::Crc32cHex(t.crc32c) +
                           ", data " + storage::Crc32cHex(crc) + "): the data is corrupt");
    }
  }
  return ck;
}

StatusOr<LoadedCheckpoint> Checkpointer::ReadNewestValid() {
  GANTRY_ASSIGN_OR_RETURN(std::vector<std::string> names, ListCommitted());
  if (names.empty()) return NotFoundError("no committed checkpoint in " + store_->Describe());
  Status last;
  for (auto it = names.rbegin(); it != names.rend(); ++it) {
    StatusOr<LoadedCheckpoint> ck = Read(*it);
    if (ck.ok()) return ck;
    if (last.ok()) last = ck.status();
    GANTRY_LOG(WARNING, "checkpoint refused; falling back to the previous one")
        .Field("checkpoint", *it)
        .Field("error", ck.status().message());
  }
  return DataLossError("all " + std::to_string(names.size()) + " checkpoints in " +
                       store_->Describe() + " failed verification; newest error: " +
                       last.message() + ". Remove them or use --no-resume with another dir");
}

}  // namespace gantry::train
