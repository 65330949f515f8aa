// Store: the small key-value rendezvous ranks use before a Communicator exists (addresses,
// shared-memory names, the NCCL unique id). Implementations: MemoryStore (threads of one
// process), TcpStore (client of a TcpStoreServer at MASTER_ADDR:MASTER_PORT), and the
// coordinator's KV (coordinator/, implements this interface). PrefixStore namespaces keys.
// Thread-safe. Values are opaque bytes; keys are set once (a second Set overwrites).
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "base/status.h"

namespace gantry::comm {

class Store {
 public:
  virtual ~Store() = default;
  virtual Status Set(const std::string& key, const std::string& value) = 0;
  // Blocks until `key` exists or `timeout` passes (kDeadlineExceeded naming the key).
  virtual StatusOr<std::string> Get(const std::string& key, std::chrono::milliseconds timeout) = 0;
  // Atomically adds `delta` to the integer at `key` (missing = 0); returns the new value.
  virtual StatusOr<int64_t> Add(const std::string& key, int64_t delta) = 0;
  // Blocks until every key exists.
  virtual Status Wait(const std::vector<std::string>& keys, std::chrono::milliseconds timeout);
};

// In-process store: ranks that are threads of one process, and the TcpStoreServer's table.
class MemoryStore : public Store {
 public:
  Status Set(const std::string& key, const std::string& value) override;
  StatusOr<std::string> Get(const std::string& key, std::chrono::milliseconds timeout) override;
  StatusOr<int64_t> Add(const std::string& key, int64_t delta) override;
  // Wakes every waiting Get with kUnavailable (used when the TCP store server stops).
  void Close();

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool closed_ = false;
  std::map<std::string, std::string> data_;
};

// Prepends "<prefix>/" to every key; shares the underlying store.
class PrefixStore : public Store {
 public:
  PrefixStore(std::string prefix, std::shared_ptr<Store> base)
      : prefix_(std::move(prefix) + "/"), base_(std::move(base)) {}
  Status Set(const std::string& key, const std::string& value) override {
    return base_->Set(prefix_ + key, value);
  }
  StatusOr<std::string> Get(const std::string& key, std::chrono::milliseconds timeout) override {
    return base_->Get(prefix_ + key, timeout);
  }
  StatusOr<int64_t> Add(const std::string& key, int64_t delta) override {
    return base_->Add(prefix_ + key, delta);
  }

 private:
  std::string prefix_;
  std::shared_ptr<Store> base_;
};

}  // namespace gantry::comm
