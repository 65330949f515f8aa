// LocalObjectStore: the embedded ObjectStore on a POSIX directory (key "a/b" = file ROOT/a/b).
// Put is write-to-temp + fsync + rename + fsync(dir), so a crash leaves the old object or the
// new one. CompareAndPut serialises writers of one key with flock on a sidecar lock file, so
// it is safe across processes on one host (not across NFS clients). Reads complete inline
// (pread into the caller's buffer): the page cache is faster than any queue we could add.
#pragma once

#include <memory>
#include <string>

#include "storage/object_store.h"

namespace gantry::storage {

class LocalObjectStore final : public ObjectStore {
 public:
  // Creates `root` (and parents) when missing.
  static StatusOr<std::unique_ptr<LocalObjectStore>> Open(const std::string& root);

  std::string Describe() const override { return "file://" + root_; }
  std::unique_ptr<PendingRead> GetAsync(std::string_view key, uint64_t offset,
                                        std::span<std::byte> dst) override;
  StatusOr<uint64_t> Size(std::string_view key) override;
  StatusOr<std::string> GetAll(std::string_view key) override;
  Status Put(std::string_view key, std::span<const std::byte> data) override;
  StatusOr<std::vector<std::string>> List(std::string_view prefix) override;
  Status Remove(std::string_view key) override;
  Status CompareAndPut(std::string_view key, std::optional<std::string_view> expected,
                       std::span<const std::byte> data) override;
  using ObjectStore::CompareAndPut;
  using ObjectStore::Put;

  const std::string& root() const { return root_; }

 private:
  explicit LocalObjectStore(std::string root) : root_(std::move(root)) {}
  std::string PathOf(std::string_view key) const { return root_ + "/" + std::string(key); }
  Status NotFound(std::string_view key) const;
  StatusOr<int> OpenForRead(std::string_view key);
  static StatusOr<uint64_t> PreadAll(int fd, uint64_t offset, std::span<std::byte> dst,
                                     const std::string& path);
  StatusOr<uint64_t> ReadAt(std::string_view key, uint64_t offset, std::span<std::byte> dst);

  std::string root_;
};

}  // namespace gantry::storage
