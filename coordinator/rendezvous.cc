// Rendezvous KV: scoped keys, counters, parked Gets (see coordinator/rendezvous.h).
#include "coordinator/rendezvous.h"

#include <charconv>
#include <cstdlib>

#include "proto/wire.h"

namespace gantry::coordinator {

namespace {
proto::Envelope ValueReply(uint64_t request_id, const std::string& value) {
  proto::Envelope env;
  env.set_version(wire::kProtocolVersion);
  env.set_request_id(request_id);
  env.mutable_kv_value()->set_value(value);
  return env;
}
}  // namespace

Status Rendezvous::Store(const std::string& scope, const std::string& key, std::string value) {
  if (value.size() > limits_.value_bytes) {
    return ResourceExhaustedError("rendezvous key '" + key + "' of " + scope + ": a value of " +
                                  std::to_string(value.size()) + " bytes is over the limit of " +
                                  std::to_string(limits_.value_bytes) +
                                  " (the KV is for addresses and ids, not data)");
  }
  ScopeData& d = data_[scope];
  auto it = d.keys.find(key);
  const size_t old_bytes = it == d.keys.end() ? 0 : key.size() + it->second.size();
  const size_t new_bytes = key.size() + value.size();
  const size_t scope_after = d.bytes - old_bytes + new_bytes;
  const size_t total_after = total_bytes_ - old_bytes + new_bytes;
  if (new_bytes > old_bytes &&
      (scope_after > limits_.scope_bytes || total_after > limits_.total_bytes)) {
    if (d.keys.empty() && d.parked == 0) data_.erase(scope);
    const bool scope_full = scope_after > limits_.scope_bytes;
    return ResourceExhaustedError(
        "rendezvous key '" + key + "' of " + scope + " (" + std::to_string(value.size()) +
        " bytes): " +
        (scope_full ? "the attempt's keys would take " + std::to_string(scope_after) +
                          " bytes, over its budget of " + std::to_string(limits_.scope_bytes)
                    : "the coordinator's rendezvous store is full (" +
                          std::to_string(limits_.total_bytes) + " bytes over every job)"));
  }
  d.bytes = scope_after;
  total_bytes_ = total_after;
  d.keys[key] = std::move(value);
  return OkStatus();
}

Status Rendezvous::Set(const std::string& scope, const std::string& key, const std::string& value,
                       std::vector<RoutedReply>& out) {
  GANTRY_RETURN_IF_ERROR(Store(scope, key, value));
  Wake(scope, key, out);
  return OkStatus();
}

StatusOr<int64_t> Rendezvous::Add(const std::string& scope, const std::string& key, int64_t delta,
                                  std::vector<RoutedReply>& out) {
  int64_t v = 0;
  if (std::optional<std::string> old = Get(scope, key); old && !old->empty()) {
    const char* begin = old->data();
    const char* end = begin + old->size();
    auto [ptr, ec] = std::from_chars(begin, end, v);
    if (ec != std::errc() || ptr != end) {
      return InvalidArgumentError("rendezvous key '" + key + "' of " + scope +
                                  " holds a value that is not a counter; cannot add to it");
    }
  }
  if (__builtin_add_overflow(v, delta, &v)) {
    return OutOfRangeError("rendezvous counter '" + key + "' of " + scope + " would overflow");
  }
  GANTRY_RETURN_IF_ERROR(Store(scope, key, std::to_string(v)));
  Wake(scope, key, out);
  return v;
}

std::optional<std::string> Rendezvous::Get(const std::string& scope, const std::string& key) const {
  auto s = data_.find(scope);
  if (s == data_.end()) return std::nullopt;
  auto k = s->second.keys.find(key);
  if (k == s->second.keys.end()) return std::nullopt;
  return k->second;
}

Status Rendezvous::Park(const std::string& scope, const std::string& key,
                        const std::string& identity, uint64_t request_id, SteadyTime deadline) {
  ScopeData& d = data_[scope];
  if (d.parked >= limits_.scope_parked) {
    return ResourceExhaustedError("rendezvous Get of '" + key + "' in " + scope + ": " +
                                  std::to_string(d.parked) + " Gets of this attempt are already "
                                  "waiting (the most one attempt may have)");
  }
  ++d.parked;
  parked_.push_back({scope, key, identity, request_id, deadline});
  return OkStatus();
}

void Rendezvous::Wake(const std::string& scope, const std::string& key,
                      std::vector<RoutedReply>& out) {
  ScopeData& d = data_[scope];
  const std::string& value = d.keys[key];
  for (auto it = parked_.begin(); it != parked_.end();) {
    if (it->scope == scope && it->key == key) {
      out.push_back({it->identity, ValueReply(it->request_id, value)});
      --d.parked;
      it = parked_.erase(it);
    } else {
      ++it;
    }
  }
}

void Rendezvous::Expire(SteadyTime now, std::vector<RoutedReply>& out) {
  for (auto it = parked_.begin(); it != parked_.end();) {
    if (it->deadline <= now) {
      out.push_back(
          {it->identity,
           wire::ErrorReply(it->request_id, DeadlineExceededError("rendezvous key '" + it->key +
                                                                  "' of " + it->scope +
                                                                  " was not set in time: did every "
                                                                  "rank start?"))});
      if (auto d = data_.find(it->scope); d != data_.end()) --d->second.parked;
      it = parked_.erase(it);
    } else {
      ++it;
    }
  }
}

void Rendezvous::Drop(const std::string& scope, std::vector<RoutedReply>& out) {
  if (auto d = data_.find(scope); d != data_.end()) {
    total_bytes_ -= d->second.bytes;
    data_.erase(d);
  }
  for (auto it = parked_.begin(); it != parked_.end();) {
    if (it->scope == scope) {
      out.push_back({it->identity,
                     wire::ErrorReply(it->request_id, CancelledError("attempt " + scope +
                                                                     " ended while waiting for '" +
                                                                     it->key + "'"))});
      it = parked_.erase(it);
    } else {
      ++it;
    }
  }
}

}  // namespace gantry::coordinator
