// Rendezvous KV: scoped keys, counters, parked Gets (see coordinator/rendezvous.h).
#include "coordinator/rendezvous.h"

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

void Rendezvous::Set(const std::string& scope, const std::string& key, const std::string& value,
                     std::vector<RoutedReply>& out) {
  data_[scope][key] = value;
  Wake(scope, key, out);
}

int64_t Rendezvous::Add(const std::string& scope, const std::string& key, int64_t delta,
                        std::vector<RoutedReply>& out) {
  std::string& slot = data_[scope][key];
  int64_t v = slot.empty() ? 0 : std::strtoll(slot.c_str(), nullptr, 10);
  v += delta;
  slot = std::to_string(v);
  Wake(scope, key, out);
  return v;
}

std::optional<std::string> Rendezvous::Get(const std::string& scope, const std::string& key) const {
  auto s = data_.find(scope);
  if (s == data_.end()) return std::nullopt;
  auto k = s->second.find(key);
  if (k == s->second.end()) return std::nullopt;
  return k->second;
}

void Rendezvous::Park(const std::string& scope, const std::string& key, const std::string& identity,
                      uint64_t request_id, SteadyTime deadline) {
  parked_.push_back({scope, key, identity, request_id, deadline});
}

void Rendezvous::Wake(const std::string& scope, const std::string& key,
                      std::vector<RoutedReply>& out) {
  const std::string& value = data_[scope][key];
  for (auto it = parked_.begin(); it != parked_.end();) {
    if (it->scope == scope && it->key == key) {
      out.push_back({it->identity, ValueReply(it->request_id, value)});
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
      it = parked_.erase(it);
    } else {
      ++it;
    }
  }
}

void Rendezvous::Drop(const std::string& scope, std::vector<RoutedReply>& out) {
  data_.erase(scope);
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
