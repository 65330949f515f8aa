// CheckpointStore: the commit protocol of checkpoints in any ObjectStore (file:// or ceph://).
// Layout under the store root:  ckpt-000200/<blob>         (data, written first: "data.bin")
//                               ckpt-000200/manifest.json  (blob table, CRCs, metadata: last)
//                               latest                     ("ckpt-000200\n")
// Commit = manifest written, then `latest` moved by compare-and-put; then keep-last-N prunes.
// What goes in the blobs and the metadata is the caller's (train::Checkpointer); this file
// alone decides write order, commit, pruning and which checkpoint a load falls back to.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "storage/object_store.h"

namespace gantry::storage {

inline constexpr char kCheckpointManifestName[] = "manifest.json";
inline constexpr char kCheckpointLatestKey[] = "latest";

struct CheckpointBlob {
  std::string name;                 // [A-Za-z0-9._-]+, not "manifest.json"; e.g. "data.bin"
  std::span<const std::byte> data;  // borrowed for the duration of Save
  // false: the store records the blob's CRC-32C and checks it on load. true: the caller
  // checksums the content itself (e.g. per tensor, in its metadata) and checks it in the
  // CheckpointCheck it passes to Load; the store only checks the size (one CRC pass saved).
  bool caller_checksums = false;
};

struct Checkpoint {
  int64_t step = 0;
  std::string metadata;                      // Save's JSON document (compact form; "" if none)
  std::map<std::string, std::string> blobs;  // name -> bytes
};

// Runs on a checkpoint after the store's own checks passed; may move blobs out of it. A
// non-OK status refuses the checkpoint like a failed CRC (LoadLatest then tries the previous
// one), so its message should name what is bad (say, the tensor).
using CheckpointCheck = std::function<Status(Checkpoint&)>;

struct CheckpointStoreOptions {
  int keep_last = 3;  // committed checkpoints kept after each commit; <= 0 keeps them all
  // Load reads each blob in pieces of at most this many bytes (one Ceph read takes at most
  // 2 GiB; a 2 GiB+ checkpoint, ~180M parameters with Adam, was refused as corrupt).
  uint64_t read_piece_bytes = uint64_t{1} << 30;
};

// Blocking; not thread-safe (one CheckpointStore per thread). One writer per store: a writer
// that finds `latest` moved under it during a commit gets Aborted.
class CheckpointStore {
 public:
  static StatusOr<std::unique_ptr<CheckpointStore>> Open(std::string_view uri,
                                                         CheckpointStoreOptions options = {});
  CheckpointStore(std::shared_ptr<ObjectStore> store, CheckpointStoreOptions options);

  // "ckpt-000200" (at least 6 digits); the step of such a name (canonical form only).
  static std::string DirName(int64_t step);
  static std::optional<int64_t> StepOf(std::string_view dir_name);

  std::string Describe() const { return store_->Describe(); }

  // Moves an earlier committed checkpoint of `step` to replaced/ckpt-NNNNNN.K/ (never pruned;
  // e.g. one refused as corrupt that training passed again), writes the blobs, the
  // manifest (with `metadata`, a JSON document or ""), commits `latest`, prunes. Errors:
  // InvalidArgument (bad step, blob name or metadata), Aborted (another writer moved
  // `latest`), store errors as they come. A failure leaves earlier checkpoints loadable.
  Status Save(int64_t step, const std::vector<CheckpointBlob>& blobs, std::string_view metadata);

  // One checkpoint, verified (sizes, store CRCs, then `check`): NotFound without a manifest,
  // InvalidArgument for a foreign manifest, DataLoss for a bad blob, or `check`'s error.
  StatusOr<Checkpoint> Load(int64_t step, const CheckpointCheck& check = nullptr);
  // The checkpoint `latest` names, else the newest older committed one, that verifies. Each
  // refused one is logged as a warning. NotFound when none is committed; DataLoss (with the
  // newest error) when all fail. Store failures (unreachable, timeouts) come back as they
  // are: falling back on them would silently rewind training.
  StatusOr<Checkpoint> LoadLatest(const CheckpointCheck& check = nullptr);
  // Steps that have a manifest, ascending.
  StatusOr<std::vector<int64_t>> ListCommitted();
  // The step `latest` names, or nullopt when nothing was committed yet.
  StatusOr<std::optional<int64_t>> LatestStep();

  ObjectStore& store() { return *store_; }

 private:
  Status Commit(int64_t step);
  Status Prune(int64_t committed_step);
  // Copies checkpoint `step` to replaced/ckpt-NNNNNN.K/ (K: the first unused) and removes it.
  Status KeepAside(int64_t step);

  std::shared_ptr<ObjectStore> store_;
  CheckpointStoreOptions options_;
};

}  // namespace gantry::storage
