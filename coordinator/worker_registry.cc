// WorkerRegistry: registration, heartbeats, loss detection and resource allocation.
#include "coordinator/worker_registry.h"

namespace gantry::coordinator {

WorkerEntry& WorkerRegistry::Register(const proto::RegisterWorker& msg,
                                      const std::string& identity) {
  WorkerEntry& w = workers_[msg.worker_id()];
  w = WorkerEntry{};
  w.id = msg.worker_id();
  w.hostname = msg.hostname();
  w.address = msg.address();
  w.identity = identity;
  w.resources = msg.resources();
  w.last_seen = clock_->Now();
  w.epoch = msg.epoch();
  return w;
}

bool WorkerRegistry::Heartbeat(const std::string& worker_id, const std::string& identity,
                               uint64_t epoch, bool* stale) {
  if (stale) *stale = false;
  auto it = workers_.find(worker_id);
  if (it == workers_.end() || it->second.lost) return false;
  if (epoch != 0 && epoch < it->second.epoch) {
    if (stale) *stale = true;
    return true;
  }
  it->second.last_seen = clock_->Now();
  it->second.identity = identity;
  return true;
}

void WorkerRegistry::Touch(const std::string& identity) {
  for (auto& [id, w] : workers_) {
    if (!w.lost && w.identity == identity) {
      w.last_seen = clock_->Now();
      return;
    }
  }
}

std::vector<std::string> WorkerRegistry::ExpireLost() {
  std::vector<std::string> lost;
  const SteadyTime now = clock_->Now();
  for (auto& [id, w] : workers_) {
    if (w.lost) continue;
    if (now - w.last_seen >
        interval_ * lost_after_ + (w.leaving ? kLeavingGrace : std::chrono::seconds(0))) {
      w.lost = true;
      w.gpus_used.clear();
      w.cpus_used = 0;
      w.ports_used.clear();
      w.ranks_running = 0;
      lost.push_back(id);
    }
  }
  return lost;
}

bool WorkerRegistry::MarkLeaving(const std::string& worker_id, uint64_t epoch) {
  auto it = workers_.find(worker_id);
  if (it == workers_.end() || it->second.lost) return false;
  WorkerEntry& w = it->second;
  if (epoch != 0 && epoch < w.epoch) return false;
  w.leaving = true;
  w.last_seen = clock_->Now();
  return true;
}

WorkerEntry* WorkerRegistry::Find(const std::string& id) {
  auto it = workers_.find(id);
  return it == workers_.end() ? nullptr : &it->second;
}

StatusOr<std::vector<int>> WorkerRegistry::Allocate(const std::string& id, int gpus, int cpus) {
  WorkerEntry* w = Find(id);
  if (!w || w->lost) return UnavailableError("worker " + id + " is not available");
  std::vector<int> got;
  for (const auto& g : w->resources.gpus()) {
    if (static_cast<int>(got.size()) == gpus) break;
    if (!w->gpus_used.count(g.index())) got.push_back(g.index());
  }
  if (static_cast<int>(got.size()) < gpus || w->cpus_used + cpus > w->resources.cpu_slots())
    return ResourceExhaustedError("worker " + id + " has no room for a rank of " +
                                  std::to_string(gpus) + " GPU(s), " + std::to_string(cpus) +
                                  " CPU(s)");
  for (int g : got) w->gpus_used.insert(g);
  w->cpus_used += cpus;
  ++w->ranks_running;
  return got;
}

void WorkerRegistry::Adopt(const std::string& id, const std::vector<int>& gpus, int cpus) {
  WorkerEntry* w = Find(id);
  if (!w) return;
  for (int g : gpus) w->gpus_used.insert(g);
  w->cpus_used += cpus;
  ++w->ranks_running;
}

void WorkerRegistry::Release(const std::string& id, const std::vector<int>& gpus, int cpus) {
  WorkerEntry* w = Find(id);
  if (!w || w->lost) return;
  for (int g : gpus) w->gpus_used.erase(g);
  w->cpus_used = std::max(0, w->cpus_used - cpus);
  w->ranks_running = std::max(0, w->ranks_running - 1);
}

int WorkerRegistry::AllocatePort(const std::string& id, int base, int count, int seed) {
  WorkerEntry* w = Find(id);
  if (!w || count <= 0) return 0;
  // A port belongs to the host, and several workers can share one (gantry up starts them all
  // on this machine): two jobs on two such workers were handed the same MASTER_PORT.
  auto taken = [&](int port) {
    for (const auto& [other_id, other] : workers_) {
      if ((other_id == id || other.address == w->address) && other.ports_used.count(port)) {
        return true;
      }
    }
    return false;
  };
  for (int i = 0; i < count; ++i) {
    const int port = base + (seed + i) % count;
    if (!taken(port)) {
      w->ports_used.insert(port);
      return port;
    }
  }
  return 0;
}

void WorkerRegistry::ReleasePort(const std::string& id, int port) {
  if (WorkerEntry* w = Find(id)) w->ports_used.erase(port);
}

}  // namespace gantry::coordinator
