// WorkerRegistry: the workers the coordinator knows, their resources and allocations, and
// liveness from heartbeats (lost after `lost_after_missed` silent intervals). In memory only:
// after a coordinator restart workers re-register and report their ranks. Single-threaded.
#pragma once

#include <chrono>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "base/status.h"
#include "coordinator/clock.h"
#include "proto/gantry.pb.h"

namespace gantry::coordinator {

struct WorkerEntry {
  std::string id, hostname, address;
  std::string identity;  // ZeroMQ routing id of its DEALER
  proto::WorkerResources resources;
  SteadyTime last_seen{};
  bool lost = false;
  bool leaving = false;  // said it is shutting down: nothing is placed on it, and it has
                         // kLeavingGrace more to report its ranks' exits before it is lost
  std::set<int> gpus_used;
  int cpus_used = 0;
  std::set<int> ports_used;
  int ranks_running = 0;
  uint64_t epoch = 0;  // of its last registration
};

// How long past the usual heartbeat deadline a leaving worker has to stop its ranks and
// report their exits (it sends no heartbeats meanwhile) before it is taken for lost.
inline constexpr std::chrono::seconds kLeavingGrace{15};

class WorkerRegistry {
 public:
  WorkerRegistry(const Clock* clock, std::chrono::milliseconds heartbeat_interval,
                 int lost_after_missed)
      : clock_(clock), interval_(heartbeat_interval), lost_after_(lost_after_missed) {}

  // Adds or refreshes a worker (a returning worker starts with no allocations: the caller
  // re-adds those of the ranks it reports).
  WorkerEntry& Register(const proto::RegisterWorker& msg, const std::string& identity);
  // False when the worker is unknown or was declared lost: it must register again. A heartbeat
  // of an older registration (`epoch` below the registered one; 0 = not sent) is stale:
  // *stale is set and nothing changes.
  bool Heartbeat(const std::string& worker_id, const std::string& identity, uint64_t epoch = 0,
                 bool* stale = nullptr);
  // Any message from a registered worker's socket shows it alive (a worker sending a backlog of
  // output must not be taken for lost because its heartbeats queue behind it).
  void Touch(const std::string& identity);
  // Marks workers silent for longer than interval * lost_after as lost; returns their ids.
  std::vector<std::string> ExpireLost();
  // The worker said it is shutting down: nothing more is placed on it (registering again
  // clears it). False when unknown, lost, or `epoch` is of an older registration.
  bool MarkLeaving(const std::string& worker_id, uint64_t epoch);

  WorkerEntry* Find(const std::string& id);
  const std::map<std::string, WorkerEntry>& workers() const { return workers_; }

  // GPU indices for one rank (lowest free first); empty when n == 0.
  StatusOr<std::vector<int>> Allocate(const std::string& id, int gpus, int cpus);
  // Marks specific GPUs used (re-adoption after a restart).
  void Adopt(const std::string& id, const std::vector<int>& gpus, int cpus);
  void Release(const std::string& id, const std::vector<int>& gpus, int cpus);
  // A port from [base, base + count) that no running job on this worker's host (its address,
  // shared by every worker there) holds; 0 if none.
  int AllocatePort(const std::string& id, int base, int count, int seed);
  void ReleasePort(const std::string& id, int port);

  std::chrono::milliseconds heartbeat_interval() const { return interval_; }
  int lost_after_missed() const { return lost_after_; }

 private:
  const Clock* clock_;
  std::chrono::milliseconds interval_;
  int lost_after_;
  std::map<std::string, WorkerEntry> workers_;
};

}  // namespace gantry::coordinator
