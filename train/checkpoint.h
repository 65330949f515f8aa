// Checkpoints of the training engine: one prefix per step ("ckpt-000200/") holding data.bin
// (tensor bytes) and manifest.json, whose metadata is this file's document (magic, format
// version, step, data position, RNG state, model and optimizer specs, tensor table with
// dtype/shape/offset/crc32c). Serialisation and per-tensor checks live here; the commit
// protocol (data, manifest, compare-and-put of `latest`, keep-last-N, fallback to the previous
// checkpoint) is storage::CheckpointStore's. Bytes written are a pure function of the training
// state (resumed runs are byte-identical). Not thread-safe; one Checkpointer per rank-0 trainer.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "base/job_spec.h"
#include "base/status.h"
#include "kernels/tensor.h"
#include "storage/checkpoint_store.h"
#include "storage/object_store.h"
#include "train/data.h"
#include "train/rng.h"

namespace gantry::train {

inline constexpr char kCheckpointMagic[] = "gantry-checkpoint";
inline constexpr int kCheckpointFormatVersion = 1;

// Everything in a checkpoint besides the tensors.
struct CheckpointMeta {
  int64_t step = 0;   // optimizer updates completed
  DataPosition data;  // the next batch to train on
  Rng::State rng{};   // the trainer's RNG
  ModelSpec model;
  OptimizerSpec optimizer;
  std::string tokenizer;  // "bytes" for byte-level text models
  std::string job;        // job name (informational)
  // What fixes the data order the position refers to. A resume with other values trains on,
  // but not as the uninterrupted run would (Trainer warns). Absent in older checkpoints
  // (data_uri empty): nothing is compared.
  std::string data_uri;
  uint64_t data_seed = 0;
  int64_t batch_per_rank = 0;
  int64_t world_size = 0;
};

// A tensor to save, or to load into (host or device; shape and dtype must match on load).
struct NamedTensor {
  std::string name;
  kernels::Tensor tensor;
};

struct TensorRecord {
  std::string name;
  kernels::DType dtype = kernels::DType::kF32;
  kernels::Shape shape;
  uint64_t offset = 0;  // bytes into data.bin
  uint64_t nbytes = 0;
  uint32_t crc32c = 0;
};

// A checkpoint read back and verified (every tensor's checksum matched).
struct LoadedCheckpoint {
  std::string name;  // "ckpt-000200"
  CheckpointMeta meta;
  std::vector<TensorRecord> tensors;
  std::string data;  // data.bin
  const TensorRecord* Find(const std::string& tensor) const;
  // Copies each named tensor into its destination. kNotFound / kInvalidArgument name the
  // tensor when it is missing or its shape/dtype differ.
  Status Restore(const std::vector<NamedTensor>& dst) const;
};

// "ckpt-000200" for step 200; step of a name, or -1 when it is not a checkpoint name.
std::string CheckpointName(int64_t step);
int64_t CheckpointStep(const std::string& name);

class Checkpointer {
 public:
  // `uri`: file:///dir, a plain directory (created when missing) or ceph://pool/prefix.
  static StatusOr<std::unique_ptr<Checkpointer>> Open(const std::string& uri, int keep_last);
  explicit Checkpointer(std::unique_ptr<storage::ObjectStore> store, int keep_last);

  std::string Describe() const { return store_->Describe(); }
  // Writes checkpoint meta.step (replacing an uncommitted or older one of that step), commits
  // it, points `latest` at it and prunes (keep_last <= 0 keeps all). A failure leaves earlier
  // checkpoints intact.
  Status Save(const CheckpointMeta& meta, const std::vector<NamedTensor>& tensors);
  // Committed checkpoint names (manifest present), ascending by step.
  StatusOr<std::vector<std::string>> ListCommitted();
  // Reads and verifies one checkpoint: kDataLoss naming the tensor on a checksum mismatch,
  // kNotFound when its manifest is missing, kInvalidArgument for a bad magic/version.
  StatusOr<LoadedCheckpoint> Read(const std::string& name);
  // The checkpoint `latest` names (else the newest older committed one) that verifies; each
  // refused one is logged as a warning naming the tensor and the previous one tried.
  // kNotFound when none is committed; kDataLoss when all fail.
  StatusOr<LoadedCheckpoint> ReadNewestValid();

 private:
  // Decodes the metadata, checks every tensor's crc32c and moves data.bin into *out.
  Status Unpack(storage::Checkpoint& raw, LoadedCheckpoint* out) const;

  std::unique_ptr<storage::CheckpointStore> store_;
  std::vector<std::byte> staging_;  // data.bin assembled here; reused across saves
};

// The checkpoint's metadata document, the `metadata` of manifest.json (checkpoint_manifest.cc;
// also broadcast by the trainer). Parse errors name `source` and the bad field.
std::string EncodeManifest(const CheckpointMeta& meta, const std::vector<TensorRecord>& tensors,
                           uint64_t data_bytes);
Status DecodeManifest(const std::string& json, const std::string& source, CheckpointMeta* meta,
                      std::vector<TensorRecord>* tensors, uint64_t* data_bytes);

}  // namespace gantry::train
