// ObjectStore: the byte store under datasets and checkpoints (DESIGN.md). Keys are
// '/'-separated relative names under the store's root (a directory, or a Ceph pool + prefix).
// Backends: local/ (embedded default, POSIX files) and ceph/ (librados aio). Not a cache and
// not a filesystem: whole objects are replaced atomically, reads take byte ranges.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"

namespace gantry::storage {

// An outstanding read. Wait() blocks until the bytes are in the destination buffer (or the
// read failed) and returns how many bytes were read: fewer than requested only when the
// object ends first. Wait() may be called more than once (same answer). Destroying a pending
// read waits for it, so the destination buffer only has to outlive this object.
class PendingRead {
 public:
  virtual ~PendingRead() = default;
  virtual StatusOr<uint64_t> Wait() = 0;
};

// Contract for every backend (checked by tests/unit/storage/object_store_conformance_test.cc):
//  - All methods are thread-safe; GetAsync may be called from many threads at once.
//  - Put replaces the whole object atomically: a reader sees the old bytes or the new bytes,
//    never a mix or a prefix (for Ceph objects above the stripe size see ceph/).
//  - Missing keys: NotFound naming the key and the store. Bad keys: InvalidArgument.
//  - Transient backend errors are retried inside the backend; what comes back is final.
//  - Every call is bounded in time by the backend's timeout (DeadlineExceeded), never hangs.
class ObjectStore {
 public:
  virtual ~ObjectStore() = default;

  // The store's URI (without secrets), for messages: "file:///data/x", "ceph://pool/prefix".
  virtual std::string Describe() const = 0;

  // Starts reading dst.size() bytes of `key` from byte `offset` into dst. Errors come back
  // from Wait(). Reading at or after the end returns 0 bytes.
  virtual std::unique_ptr<PendingRead> GetAsync(std::string_view key, uint64_t offset,
                                                std::span<std::byte> dst) = 0;
  // Size of the object in bytes.
  virtual StatusOr<uint64_t> Size(std::string_view key) = 0;
  // Creates or replaces `key` with `data`, atomically.
  virtual Status Put(std::string_view key, std::span<const std::byte> data) = 0;
  // Keys that start with `prefix` (plain string prefix; "" lists all), sorted ascending.
  virtual StatusOr<std::vector<std::string>> List(std::string_view prefix) = 0;
  // Removes `key`; NotFound if it does not exist.
  virtual Status Remove(std::string_view key) = 0;
  // Puts `data` only if the object's current content equals `expected` (nullopt: only if the
  // object does not exist). Aborted when the current content differs: someone else won.
  // Meant for small pointer objects (<= 64 KiB), e.g. a checkpoint's `latest`.
  virtual Status CompareAndPut(std::string_view key, std::optional<std::string_view> expected,
                               std::span<const std::byte> data) = 0;

  // Conveniences built on the calls above.
  StatusOr<uint64_t> Get(std::string_view key, uint64_t offset, std::span<std::byte> dst) {
    return GetAsync(key, offset, dst)->Wait();
  }
  // The whole object, read from one version of it (backends override to make it so).
  virtual StatusOr<std::string> GetAll(std::string_view key);
  Status Put(std::string_view key, std::string_view data) {
    return Put(key, std::as_bytes(std::span<const char>(data.data(), data.size())));
  }
  Status CompareAndPut(std::string_view key, std::optional<std::string_view> expected,
                       std::string_view data) {
    return CompareAndPut(key, expected, std::as_bytes(std::span<const char>(data)));
  }
  StatusOr<bool> Exists(std::string_view key);
};

// A parsed store URI.
//   file:///abs/dir, file://rel/dir, /abs/dir, rel/dir          -> scheme "file", path
//   ceph://pool[/prefix][?conf=F&id=ID&keyring=K&timeout_s=S&retries=N&stripe_bytes=B&inflight=N]
// Ceph defaults come from the environment: CEPH_CONF, GANTRY_CEPH_ID, GANTRY_CEPH_KEYRING.
struct StoreUri {
  std::string scheme;  // "file" | "ceph"
  std::string path;    // file: absolute directory
  std::string pool;    // ceph: pool name
  std::string prefix;  // ceph: key prefix, "" or ending in '/'
  std::map<std::string, std::string> params;  // ceph: query parameters, decoded
  std::string ToString() const;               // canonical form, query omitted
};

StatusOr<StoreUri> ParseStoreUri(std::string_view uri);

// Opens the store named by `uri`. Ceph URIs need a build with GANTRY_WITH_CEPH.
StatusOr<std::unique_ptr<ObjectStore>> OpenObjectStore(std::string_view uri);

// Checks a key: non-empty, <= 1024 bytes, relative, no empty/"."/".." components, no NUL,
// no component starting with ".gantry" (reserved for temp files and stripes).
Status ValidateKey(std::string_view key);

// A PendingRead that is already finished (backends that complete reads inline).
class DoneRead final : public PendingRead {
 public:
  explicit DoneRead(StatusOr<uint64_t> result) : result_(std::move(result)) {}
  StatusOr<uint64_t> Wait() override { return result_; }

 private:
  StatusOr<uint64_t> result_;
};

}  // namespace gantry::storage
