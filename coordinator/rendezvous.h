// Rendezvous: the coordinator's key-value store for the ranks of the jobs it launched (the
// comm bootstrap Store, served over the wire). Keys live in a scope "<job>/<attempt>", so a
// restarted gang never sees its previous attempt's keys; a scope is dropped when its attempt
// ends. A Get for a missing key parks the caller until the key is set or its deadline passes;
// the coordinator loop then answers it. In memory, single-threaded.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

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
  // Sets a key and answers every parked Get of it.
  void Set(const std::string& scope, const std::string& key, const std::string& value,
           std::vector<RoutedReply>& out);
  int64_t Add(const std::string& scope, const std::string& key, int64_t delta,
              std::vector<RoutedReply>& out);
  std::optional<std::string> Get(const std::string& scope, const std::string& key) const;
  // Parks a Get until Set or `deadline`.
  void Park(const std::string& scope, const std::string& key, const std::string& identity,
            uint64_t request_id, SteadyTime deadline);
  // Answers parked Gets whose deadline passed with kDeadlineExceeded naming the key.
  void Expire(SteadyTime now, std::vector<RoutedReply>& out);
  // Forgets a scope; parked Gets get kCancelled ("the attempt ended").
  void Drop(const std::string& scope, std::vector<RoutedReply>& out);
  size_t parked() const { return parked_.size(); }

 private:
  struct Parked {
    std::string scope, key, identity;
    uint64_t request_id;
    SteadyTime deadline;
  };
  void Wake(const std::string& scope, const std::string& key, std::vector<RoutedReply>& out);
  std::map<std::string, std::map<std::string, std::string>> data_;
  std::vector<Parked> parked_;
};

}  // namespace gantry::coordinator
