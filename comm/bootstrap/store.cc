// MemoryStore and the default Store::Wait.
#include "comm/bootstrap/store.h"

namespace gantry::comm {

Status Store::Wait(const std::vector<std::string>& keys, std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (const auto& key : keys) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() < 0) left = std::chrono::milliseconds(0);
    GANTRY_RETURN_IF_ERROR(Get(key, left).status());
  }
  return OkStatus();
}

Status MemoryStore::Set(const std::string& key, const std::string& value) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    data_[key] = value;
  }
  cv_.notify_all();
  return OkStatus();
}

StatusOr<std::string> MemoryStore::Get(const std::string& key, std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  if (!cv_.wait_for(lock, timeout, [&] { return closed_ || data_.count(key) > 0; })) {
    return DeadlineExceededError("store: key '" + key + "' was not set within " +
                                 std::to_string(timeout.count()) +
                                 " ms; did every rank start (check WORLD_SIZE and the other ranks' logs)?");
  }
  if (data_.count(key) == 0) return UnavailableError("store: closed while waiting for '" + key + "'");
  return data_[key];
}

void MemoryStore::Close() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    closed_ = true;
  }
  cv_.notify_all();
}

StatusOr<int64_t> MemoryStore::Add(const std::string& key, int64_t delta) {
  int64_t v = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = data_.find(key);
    if (it != data_.end()) {
      try {
        v = std::stoll(it->second);
      } catch (...) {
        return InvalidArgumentError("store: Add on key '" + key + "' whose value is not an integer");
      }
    }
    v += delta;
    data_[key] = std::to_string(v);
  }
  cv_.notify_all();
  return v;
}

}  // namespace gantry::comm
