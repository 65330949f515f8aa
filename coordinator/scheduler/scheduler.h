// Gang scheduler: a pure function from (queue, cluster view, options) to placement decisions.
// Priority classes (higher first), FIFO within a class, per-tenant GPU quotas, all-or-nothing
// gangs packed onto the fewest hosts (inside one topology label when possible), and backfill
// behind a sticky reservation for the first resource-blocked job so it cannot starve.
// No I/O, no clock reads, no threads: callers own the state and pass it in each pass.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace gantry::coordinator {

using SchedClock = std::chrono::steady_clock;

// One host's resources as the scheduler sees them in this pass.
struct HostState {
  std::string id;
  int gpus_total = 0;
  int gpus_free = 0;
  int cpus_total = 0;
  int cpus_free = 0;
  std::map<std::string, std::string> labels;  // rack, zone, fabric, ...
  bool schedulable = true;                    // false: draining or lost
};

// A queued gang: `ranks` identical ranks, all placed or none.
struct GangRequest {
  std::string job_id;
  std::string tenant = "default";
  int priority = 1;      // class: 0 low, 1 normal, 2 high (higher goes first)
  int64_t sequence = 0;  // submission order; FIFO within a class
  int ranks = 1;
  int gpus_per_rank = 0;
  int cpus_per_rank = 1;
  std::map<std::string, std::string> labels;  // hosts must carry every one of these
  SchedClock::time_point submitted{};
};

// The previous pass's reservation, carried by the caller so reservations are sticky.
struct Reservation {
  std::string job_id;             // empty: none
  std::vector<int> host_indices;  // indices into ClusterView::hosts
};

struct ClusterView {
  std::vector<HostState> hosts;
  std::map<std::string, int> tenant_gpus_used;  // GPUs held by running gangs, per tenant
};

struct SchedulerOptions {
  std::map<std::string, int> tenant_gpu_quota;  // absent tenant: unlimited
  std::string topology_key = "rack";            // label that groups hosts (empty: none)
  bool backfill = true;                         // false: strict FIFO, stop at first blocked
  Reservation previous_reservation;
};

enum class WaitReason {
  kResources,   // fits the cluster, not free now
  kReserved,    // would fit only on hosts held for the reserved head job
  kQuota,       // tenant quota would be exceeded
  kInfeasible,  // can never fit the current cluster (too big, no host with the labels)
};
const char* WaitReasonName(WaitReason reason);

struct GangPlacement {
  int queue_index = 0;  // index into the queue passed to Schedule
  std::string job_id;
  std::vector<int> rank_hosts;  // host index of each rank, rank order
  int hosts_used = 0;
  bool single_topology = true;  // all ranks share one topology label value
  SchedClock::duration queue_wait{};
};

struct WaitingGang {
  int queue_index = 0;  // index into the queue passed to Schedule
  WaitReason reason = WaitReason::kResources;
};

struct ScheduleResult {
  std::vector<GangPlacement> placed;  // in decision order
  std::vector<WaitingGang> waiting;   // every queued job not placed, queue order
  Reservation reservation;            // pass back in the next call's options
};

// Decides one scheduling pass. `queue` may be in any order (already sorted by priority desc,
// sequence asc is fastest); `now` only computes queue_wait. Resources placed earlier in the
// pass are not offered to later jobs. Cost: O(queue) plus O(hosts) per placement attempt of a
// new gang shape; a full cluster rejects each queued job in O(1).
ScheduleResult Schedule(const std::vector<GangRequest>& queue, const ClusterView& view,
                        const SchedulerOptions& options, SchedClock::time_point now);

// A human sentence for `gantry status`: why `gang` is waiting.
std::string WaitMessage(const GangRequest& gang, WaitReason reason, const SchedulerOptions& options,
                        const ClusterView& view);

// Packs one gang onto `candidates` (host indices into `hosts`) by free resources:
// fewest hosts, best fit, one topology group when possible. Empty result: does not fit.
std::vector<int> PackGang(const GangRequest& gang, const std::vector<HostState>& hosts,
                          const std::vector<int>& candidates, const std::string& topology_key);

}  // namespace gantry::coordinator
