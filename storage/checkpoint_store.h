// CheckpointStore: checkpoints of the training engine in any ObjectStore (file:// or ceph://).
// Layout under the store root:  step-000000000200/blob-<name>  (data, written first)
//                               step-000000000200/manifest.json (blob table + CRCs, last)
//                               latest                           ("step-000000000200")
// Commit = manifest written, then `latest` moved by compare-and-put. After a commit the
// store keeps the newest keep_last committed checkpoints (and the one `latest` names) and
// deletes crash leftovers older than it. Loading verifies every blob's size and CRC-32C; a
// checkpoint missing its manifest or failing a check is skipped with a warning log line and
// the previous one is used. One writer per store at a time (a second one gets Aborted).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "storage/object_store.h"

namespace gantry::storage {

struct CheckpointBlob {
  std::string name;                  // [A-Za-z0-9._-]+, e.g. "params", "adam_m", "rng"
  std::span<const std::byte> data;   // borrowed for the duration of Save
};

struct Checkpoint {
  int64_t step = 0;
  std::string metadata;  // what the trainer passed to Save (usually JSON), verbatim
  std::map<std::string, std::vector<std::byte>> blobs;
};

struct CheckpointStoreOptions {
  int keep_last = 3;  // committed checkpoints kept after each commit (>= 1)
};

class CheckpointStore {
 public:
  static StatusOr<std::unique_ptr<CheckpointStore>> Open(std::string_view uri,
                                                         CheckpointStoreOptions options = {});
  CheckpointStore(std::shared_ptr<ObjectStore> store, CheckpointStoreOptions options);

  // Writes the blobs, then the manifest, then commits `latest`, then prunes. Blocking.
  // Errors: InvalidArgument (bad step/name), Aborted (another writer moved `latest`),
  // store errors as they come.
  Status Save(int64_t step, const std::vector<CheckpointBlob>& blobs, std::string_view metadata);

  // The newest committed checkpoint that verifies (see above); NotFound when there is none.
  StatusOr<Checkpoint> LoadLatest();
  // One checkpoint, verified: NotFound without a manifest, DataLoss on a bad blob.
  StatusOr<Checkpoint> Load(int64_t step);
  // Steps that have a manifest, ascending.
  StatusOr<std::vector<int64_t>> ListCommitted();
  // The step `latest` names, or nullopt when nothing was committed yet.
  StatusOr<std::optional<int64_t>> LatestStep();

  ObjectStore& store() { return *store_; }

 private:
  Status Prune(int64_t committed_step);

  std::shared_ptr<ObjectStore> store_;
  CheckpointStoreOptions options_;
};

}  // namespace gantry::storage
