// RadosObjectStore: ObjectStore on a Ceph pool through librados (C++ API, aio).
// Key K lives in object PREFIX+K. Objects above `stripe_bytes` are split: the head object
// holds the first stripe and the layout xattr, stripes 1..n-1 live in PREFIX+K/.gantry-stripe.N
// (written first, head last; a concurrent reader of a striped object being REPLACED may see a
// mix, so never overwrite big objects that others read: datasets and checkpoints don't).
// At most `inflight` aio requests are outstanding per store (GetAsync blocks for a slot).
// Each attempt is bounded by timeout_s (rados_osd_op_timeout etc.); transient errors are
// retried `retries` times with exponential backoff. Thread-safe.
#pragma once

#include <cstdint>
#include <memory>
#include <semaphore>
#include <string>

#include <rados/librados.hpp>

#include "storage/object_store.h"

namespace gantry::storage {

struct RadosOptions {
  std::string conf;          // ceph.conf path ("" = $CEPH_CONF or /etc/ceph/ceph.conf)
  std::string id = "admin";  // client name, with or without "client."
  std::string keyring;       // "" = what the conf says
  int timeout_s = 30;        // per attempt: OSD ops, mon ops and connect
  int retries = 3;           // extra attempts after a transient error
  uint64_t stripe_bytes = 64ull << 20;  // < osd_max_object_size (128 MiB)
  int inflight = 16;         // aio requests outstanding per store
  // Reads StoreUri params (conf, id, keyring, timeout_s, retries, stripe_bytes, inflight),
  // falling back to CEPH_CONF, GANTRY_CEPH_ID, GANTRY_CEPH_KEYRING.
  static StatusOr<RadosOptions> FromUri(const StoreUri& uri);
};

class RadosObjectStore final : public ObjectStore {
 public:
  // Connects and opens the pool. Clear errors for: unreadable conf, wrong key
  // (Unauthenticated), unreachable monitors (DeadlineExceeded), missing pool (NotFound).
  static StatusOr<std::unique_ptr<RadosObjectStore>> Open(const StoreUri& uri);
  ~RadosObjectStore() override;

  std::string Describe() const override;
  std::unique_ptr<PendingRead> GetAsync(std::string_view key, uint64_t offset,
                                        std::span<std::byte> dst) override;
  StatusOr<uint64_t> Size(std::string_view key) override;
  // One op reads size, bytes and layout together (one version); stripes follow if any.
  StatusOr<std::string> GetAll(std::string_view key) override;
  Status Put(std::string_view key, std::span<const std::byte> data) override;
  StatusOr<std::vector<std::string>> List(std::string_view prefix) override;
  Status Remove(std::string_view key) override;
  Status CompareAndPut(std::string_view key, std::optional<std::string_view> expected,
                       std::span<const std::byte> data) override;
  using ObjectStore::CompareAndPut;
  using ObjectStore::Put;

  const RadosOptions& options() const { return options_; }

  // Internals shared with rados_read.cc.
  struct Layout {
    uint64_t size = 0;     // logical object size
    uint64_t stripe = 0;   // stripe size; 0 = not striped
    uint64_t stripes = 1;  // number of RADOS objects
  };
  std::string Oid(std::string_view key) const { return prefix_ + std::string(key); }
  std::string StripeOid(std::string_view key, uint64_t i) const;
  // Acquires an in-flight slot; the returned completion releases it when the op finishes.
  librados::AioCompletion* NewCompletion();
  // Gives back the slot of a completion whose submission failed.
  void ReleaseSlot() { slots_.release(); }
  librados::IoCtx& io() { return io_; }
  Status Error(int err, std::string_view op, std::string_view key) const;
  // Runs `attempt` (returns a negative errno or >= 0) with retries on transient errors.
  template <typename F>
  int WithRetries(F&& attempt);

 private:
  RadosObjectStore(RadosOptions options, std::string pool, std::string prefix);
  Status Connect();
  StatusOr<Layout> ReadLayout(std::string_view key);
  Status PutStripes(std::string_view key, std::span<const std::byte> data, uint64_t stripes);

  RadosOptions options_;
  std::string pool_;
  std::string prefix_;
  librados::Rados cluster_;
  librados::IoCtx io_;
  std::counting_semaphore<1 << 20> slots_;
};

// True for errnos worth retrying (timeouts, EAGAIN, lost connections).
bool IsTransientRadosError(int err);
// Sleeps the backoff before retry number `attempt` (0-based): 100 ms * 2^attempt, max 2 s.
void RadosBackoff(int attempt);

template <typename F>
int RadosObjectStore::WithRetries(F&& attempt) {
  int r = attempt();
  for (int i = 0; r < 0 && IsTransientRadosError(-r) && i < options_.retries; ++i) {
    RadosBackoff(i);
    r = attempt();
  }
  return r;
}

}  // namespace gantry::storage
