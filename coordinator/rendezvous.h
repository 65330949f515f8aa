// Rendezvous: the coordinator's key-value store for the ranks of the jobs it launched (the
// comm bootstrap Store, served over the wire). Keys live in a scope "<job>/<attempt>", so a
// restarted gang never sees its previous attempt's keys; a scope is dropped when its attempt
// ends. A Get for a missing key parks the caller until the key is set or its deadline passes;
// the coordinator loop then answers it. In memory, single-threaded.
// Any rank holding its attempt's token can write here, so each scope is bounded (keys + values,
// parked Gets) and so is the whole store: a runaway or hostile rank gets kResourceExhausted
// naming its scope, and cannot grow the coordinator's memory without limit.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "base/status.h"
#include "coordinator/clock.h"
#include "proto/gantry.pb.h"

namespace gantry::coordinator {

struct RoutedReply {
  std::string identity;  // ZeroMQ routing id of the DEALER to answer
  proto::Envelope env;
};

class Rendezvous {
 public:
  static std::string Scope(const std::string& job_id, int attempt) {
    return job_id + "/" + std::to_string(attempt);
  }
  struct Limits {
    size_t scope_bytes = 64u << 20;   // keys + values of one attempt
    size_t total_bytes = 1u << 30;    // every scope together
    size_t scope_parked = 1u << 14;   // Gets waiting in one attempt
    size_t value_bytes = 1u << 20;    // one value (each waiting Get gets its own copy)
  };
  Rendezvous() = default;
  explicit Rendezvous(Limits limits) : limits_(limits) {}

  // Sets a key and answers every parked Get of it. kResourceExhausted past a budget (the key
  // keeps its old value).
  Status Set(const std::string& scope, const std::string& key, const std::string& value,
             std::vector<RoutedReply>& out);
  // Adds to a counter (a missing key counts as 0); kInvalidArgument when the key holds
  // something that is not a counter.
  StatusOr<int64_t> Add(const std::string& scope, const std::string& key, int64_t delta,
                        std::vector<RoutedReply>& out);
  std::optional<std::string> Get(const std::string& scope, const std::string& key) const;
  // Parks a Get until Set or `deadline`; kResourceExhausted when the scope has too many.
  Status Park(const std::string& scope, const std::string& key, const std::string& identity,
              uint64_t request_id, SteadyTime deadline);
  // Answers parked Gets whose deadline passed with kDeadlineExceeded naming the key.
  void Expire(SteadyTime now, std::vector<RoutedReply>& out);
  // Forgets a scope; parked Gets get kCancelled ("the attempt ended").
  void Drop(const std::string& scope, std::vector<RoutedReply>& out);
  size_t parked() const { return parked_.size(); }
  size_t bytes() const { return total_bytes_; }

 private:
  struct Parked {
    std::string scope, key, identity;
    uint64_t request_id;
    SteadyTime deadline;
  };
  struct ScopeData {
    std::map<std::string, std::string> keys;
    size_t bytes = 0;
    size_t parked = 0;
  };
  // Replaces `key`'s value within the budgets.
  Status Store(const std::string& scope, const std::string& key, std::string value);
  void Wake(const std::string& scope, const std::string& key, std::vector<RoutedReply>& out);
  Limits limits_;
  std::map<std::string, ScopeData> data_;
  std::vector<Parked> parked_;
  size_t total_bytes_ = 0;
};

}  // namespace gantry::coordinator
