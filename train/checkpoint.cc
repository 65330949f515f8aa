// Checkpointer: serialises tensors + meta into data.bin and the manifest's metadata, and
// verifies them per tensor on load; storage::CheckpointStore does the commit protocol.
#include "train/checkpoint.h"

#include <algorithm>
#include <span>

#include "storage/checksum.h"

namespace gantry::train {

namespace {
constexpr char kDataFile[] = "data.bin";
}  // namespace

std::string CheckpointName(int64_t step) { return storage::CheckpointStore::DirName(step); }

int64_t CheckpointStep(const std::string& name) {
  return storage::CheckpointStore::StepOf(name).value_or(-1);
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

Checkpointer::Checkpointer(std::unique_ptr<storage::ObjectStore> store, int keep_last)
    : store_(std::make_unique<storage::CheckpointStore>(
          std::shared_ptr<storage::ObjectStore>(std::move(store)),
          storage::CheckpointStoreOptions{.keep_last = keep_last})) {}

Status Checkpointer::Save(const CheckpointMeta& meta, const std::vector<NamedTensor>& tensors) {
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
    // The only checksum pass over the data: the store is told the caller checks data.bin.
    r.crc32c = storage::Crc32c(std::span<const std::byte>(dst, r.nbytes));
  }
  const storage::CheckpointBlob data{
      kDataFile, std::span<const std::byte>(staging_.data(), total), /*caller_checksums=*/true};
  return store_->Save(meta.step, {data}, EncodeManifest(meta, records, total));
}

StatusOr<std::vector<std::string>> Checkpointer::ListCommitted() {
  GANTRY_ASSIGN_OR_RETURN(std::vector<int64_t> steps, store_->ListCommitted());
  std::vector<std::string> names;
  for (int64_t step : steps) names.push_back(CheckpointName(step));
  return names;
}

Status Checkpointer::Unpack(storage::Checkpoint& raw, LoadedCheckpoint* out) const {
  LoadedCheckpoint ck;
  ck.name = CheckpointName(raw.step);
  const std::string where = Describe() + "/" + ck.name;
  uint64_t data_bytes = 0;
  GANTRY_RETURN_IF_ERROR(DecodeManifest(raw.metadata, where + "/manifest.json", &ck.meta,
                                        &ck.tensors, &data_bytes));
  if (ck.meta.step != raw.step) {
    return DataLossError("checkpoint " + where + ": its metadata says step " +
                         std::to_string(ck.meta.step) + ": the manifest is damaged");
  }
  auto blob = raw.blobs.find(kDataFile);
  if (blob == raw.blobs.end()) {
    return DataLossError("checkpoint " + where + ": the manifest lists no data.bin");
  }
  ck.data = std::move(blob->second);
  if (ck.data.size() != data_bytes) {
    return DataLossError("checkpoint " + where + ": data.bin is " + std::to_string(ck.data.size()) +
                         " bytes but the tensor table says " + std::to_string(data_bytes));
  }
  for (const TensorRecord& t : ck.tensors) {
    const uint64_t expect = uint64_t(kernels::ShapeNumel(t.shape)) * kernels::DTypeSize(t.dtype);
    if (t.offset > ck.data.size() || t.nbytes > ck.data.size() - t.offset || t.nbytes != expect) {
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
  *out = std::move(ck);
  return OkStatus();
}

StatusOr<LoadedCheckpoint> Checkpointer::Read(const std::string& name) {
  const int64_t step = CheckpointStep(name);
  if (step < 0) {
    return InvalidArgumentError("'" + name + "' is not a checkpoint name (ckpt-NNNNNN) in " +
                                Describe());
  }
  LoadedCheckpoint out;
  GANTRY_RETURN_IF_ERROR(
      store_->Load(step, [&](storage::Checkpoint& raw) { return Unpack(raw, &out); }).status());
  return out;
}

StatusOr<LoadedCheckpoint> Checkpointer::ReadNewestValid() {
  LoadedCheckpoint out;
  auto raw = store_->LoadLatest([&](storage::Checkpoint& c) { return Unpack(c, &out); });
  if (raw.status().code() == StatusCode::kDataLoss) {
    return DataLossError(raw.status().message() +
                         ". Remove them or use --no-resume with another dir");
  }
  GANTRY_RETURN_IF_ERROR(raw.status());
  return out;
}

}  // namespace gantry::train
