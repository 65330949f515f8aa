// One scheduling pass: order the queue, enforce quotas, pack gangs, reserve for the head.
// A shape (ranks, gpus, cpus, labels) that failed once in a pass fails for every later job of
// the same shape (resources only shrink during a pass), so a long queue costs O(1) per repeat.
#include "coordinator/scheduler/scheduler.h"

#include <algorithm>
#include <numeric>
#include <unordered_map>

#include "coordinator/scheduler/pack.h"

namespace gantry::coordinator {

const char* WaitReasonName(WaitReason reason) {
  switch (reason) {
    case WaitReason::kResources:
      return "resources";
    case WaitReason::kReserved:
      return "reserved";
    case WaitReason::kQuota:
      return "quota";
    case WaitReason::kInfeasible:
      return "infeasible";
  }
  return "unknown";
}

namespace {

// Jobs with equal shape fit or fail together within a pass.
struct ShapeKey {
  int ranks, gpus, cpus;
  const std::map<std::string, std::string>* labels;
  bool operator==(const ShapeKey& o) const {
    return ranks == o.ranks && gpus == o.gpus && cpus == o.cpus &&
           (labels->empty() ? o.labels->empty() : *labels == *o.labels);
  }
};
struct ShapeHash {
  size_t operator()(const ShapeKey& k) const {
    size_t h = (static_cast<size_t>(k.ranks) * 1000003u) ^ (static_cast<size_t>(k.gpus) << 20) ^
               static_cast<size_t>(k.cpus);
    for (const auto& [key, value] : *k.labels) h ^= std::hash<std::string>()(key + value) + 0x9e37;
    return h;
  }
};
// What a pass has learned about a shape (bits).
enum : uint8_t { kFeasible = 1, kInfeasible = 2, kFailed = 4 };
using ShapeVerdicts = std::unordered_map<ShapeKey, uint8_t, ShapeHash>;

std::string Describe(const GangRequest& g) {
  return std::to_string(g.ranks) + " rank(s) x " + std::to_string(g.gpus_per_rank) + " GPU, " +
         std::to_string(g.cpus_per_rank) + " CPU";
}

// Aggregates over unreserved schedulable hosts that reject most jobs without a host scan.
struct FreeStats {
  int total_gpus = 0, max_host_gpus = 0, max_host_cpus = 0;
  int hosts_at_max_gpus = 0, hosts_at_max_cpus = 0;  // recompute only when one reaches 0
  int64_t total_cpus = 0;
};

class Pass {
 public:
  Pass(const ClusterView& view, const SchedulerOptions& options)
      : hosts_(view.hosts),
        used_(view.tenant_gpus_used),
        options_(options),
        topo_(view.hosts, options.topology_key),
        reserved_(view.hosts.size(), false) {
    free_.gpus.reserve(hosts_.size());
    free_.cpus.reserve(hosts_.size());
    for (const HostState& h : hosts_) {
      free_.gpus.push_back(h.gpus_free);
      free_.cpus.push_back(h.cpus_free);
    }
  }

  void Run(const std::vector<GangRequest>& queue, SchedClock::time_point now, ScheduleResult& out);

 private:
  std::vector<int> Candidates(const GangRequest& g, bool include_reserved) const {
    std::vector<int> c;
    c.reserve(hosts_.size());
    for (size_t i = 0; i < hosts_.size(); ++i) {
      if (!hosts_[i].schedulable || (!include_reserved && reserved_[i])) continue;
      if (!g.labels.empty() && !LabelsMatch(hosts_[i], g)) continue;
      c.push_back(static_cast<int>(i));
    }
    return c;
  }
  bool Feasible(const GangRequest& g) const {
    int total = 0;
    for (const HostState& h : hosts_) {
      if (h.schedulable && LabelsMatch(h, g)) total += RankCapacity(h, g, /*use_total=*/true);
      if (total >= g.ranks) return true;
    }
    return false;
  }
  void Apply(const GangRequest& g, const PackResult& pack) {
    for (const HostShare& s : pack.shares) {
      free_.gpus[s.host] -= s.count * g.gpus_per_rank;
      free_.cpus[s.host] -= s.count * g.cpus_per_rank;
    }
    used_[g.tenant] += g.ranks * g.gpus_per_rank;
  }
  Reservation Reserve(const GangRequest& g) const;
  void RecomputeStats() {
    stats_ = {};
    for (size_t i = 0; i < hosts_.size(); ++i) {
      if (!hosts_[i].schedulable || reserved_[i]) continue;
      stats_.total_gpus += free_.gpus[i];
      stats_.total_cpus += free_.cpus[i];
      stats_.max_host_gpus = std::max(stats_.max_host_gpus, free_.gpus[i]);
      stats_.max_host_cpus = std::max(stats_.max_host_cpus, free_.cpus[i]);
    }
    for (size_t i = 0; i < hosts_.size(); ++i) {
      if (!hosts_[i].schedulable || reserved_[i]) continue;
      stats_.hosts_at_max_gpus += free_.gpus[i] == stats_.max_host_gpus;
      stats_.hosts_at_max_cpus += free_.cpus[i] == stats_.max_host_cpus;
    }
  }
  // After `g` took `pack`: keep the aggregates exact, rescanning only when a maximum drops.
  void UpdateStats(const GangRequest& g, const PackResult& pack) {
    bool rescan = false;
    for (const HostShare& s : pack.shares) {
      if (free_.gpus[s.host] + s.count * g.gpus_per_rank == stats_.max_host_gpus &&
          s.count * g.gpus_per_rank > 0)
        rescan = rescan || --stats_.hosts_at_max_gpus == 0;
      if (free_.cpus[s.host] + s.count * g.cpus_per_rank == stats_.max_host_cpus &&
          s.count * g.cpus_per_rank > 0)
        rescan = rescan || --stats_.hosts_at_max_cpus == 0;
    }
    if (rescan) {
      RecomputeStats();
      return;
    }
    stats_.total_gpus -= g.ranks * g.gpus_per_rank;
    stats_.total_cpus -= static_cast<int64_t>(g.ranks) * g.cpus_per_rank;
  }
  // True when `g` certainly cannot fit the unreserved free resources.
  bool SurelyBlocked(const GangRequest& g) const {
    return g.gpus_per_rank > stats_.max_host_gpus || g.cpus_per_rank > stats_.max_host_cpus ||
           static_cast<int64_t>(g.ranks) * g.gpus_per_rank > stats_.total_gpus ||
           static_cast<int64_t>(g.ranks) * g.cpus_per_rank > stats_.total_cpus;
  }
  bool QuotaBlocked(const GangRequest& g, ScheduleResult& out, int qi);
  void PlaceOrBlock(const GangRequest& g, int qi, SchedClock::time_point now, ScheduleResult& out);
  Reservation ReserveAmong(const GangRequest& g, std::vector<std::vector<int>> sets) const;

  int FreeRanks(int h, const GangRequest& g) const {
    return RanksFitting(free_.gpus[h], free_.cpus[h], g);
  }
  const std::vector<HostState>& hosts_;
  FreeView free_;
  std::map<std::string, int> used_;
  const SchedulerOptions& options_;
  mutable LazyTopology topo_;  // built on first multi-host decision
  std::vector<bool> reserved_;
  FreeStats stats_;
  PackScratch scratch_;
  ShapeVerdicts verdicts_;
  bool blocked_ = false;
};

// Sticky when the previous reservation is for the same job and still valid; otherwise the
// hosts that will drain soonest (most free capacity now), one topology group when possible.
Reservation Pass::Reserve(const GangRequest& g) const {
  const Reservation& prev = options_.previous_reservation;
  if (prev.job_id == g.job_id && !prev.host_indices.empty()) {
    int total = 0;
    bool valid = true;
    for (int h : prev.host_indices) {
      if (h < 0 || h >= static_cast<int>(hosts_.size()) || !hosts_[h].schedulable ||
          !LabelsMatch(hosts_[h], g)) {
        valid = false;
        break;
      }
      total += RankCapacity(hosts_[h], g, true);
    }
    if (valid && total >= g.ranks) return prev;
  }
  const TopologyIndex& topo = topo_.Get();
  std::vector<std::vector<int>> groups(topo.num_groups);
  const std::vector<int> all = Candidates(g, /*include_reserved=*/true);
  for (int h : all) groups[topo.group_of_host[h]].push_back(h);
  Reservation best = ReserveAmong(g, groups);
  if (best.job_id.empty()) best = ReserveAmong(g, {all});  // no single group: span groups
  return best;
}

// Among host sets, the one covering the gang (by totals) with the most capacity free now.
Reservation Pass::ReserveAmong(const GangRequest& g, std::vector<std::vector<int>> sets) const {
  Reservation best;
  int best_free = -1;
  for (std::vector<int>& c : sets) {
    std::stable_sort(c.begin(), c.end(),
                     [&](int a, int b) { return FreeRanks(a, g) > FreeRanks(b, g); });
    std::vector<int> chosen;
    int total = 0, free_now = 0;
    for (int h : c) {
      const int cap = RankCapacity(hosts_[h], g, true);
      if (cap <= 0) continue;
      chosen.push_back(h);
      total += cap;
      free_now += FreeRanks(h, g);
      if (total >= g.ranks) break;
    }
    if (total >= g.ranks && free_now > best_free) {
      best = Reservation{g.job_id, std::move(chosen)};
      best_free = free_now;
    }
  }
  return best;
}

bool Pass::QuotaBlocked(const GangRequest& g, ScheduleResult& out, int qi) {
  if (options_.tenant_gpu_quota.empty()) return false;
  auto quota = options_.tenant_gpu_quota.find(g.tenant);
  if (quota == options_.tenant_gpu_quota.end()) return false;
  const int demand = g.ranks * g.gpus_per_rank;
  if (demand > quota->second) {
    out.waiting.push_back({qi, WaitReason::kInfeasible});
    return true;
  }
  if (used_[g.tenant] + demand > quota->second) {
    out.waiting.push_back({qi, WaitReason::kQuota});
    return true;
  }
  return false;
}

void Pass::PlaceOrBlock(const GangRequest& g, int qi, SchedClock::time_point now,
                        ScheduleResult& out) {
  uint8_t& verdict = verdicts_[ShapeKey{g.ranks, g.gpus_per_rank, g.cpus_per_rank, &g.labels}];
  if (!(verdict & (kFeasible | kInfeasible))) verdict |= Feasible(g) ? kFeasible : kInfeasible;
  if (verdict & kInfeasible) {
    out.waiting.push_back({qi, WaitReason::kInfeasible});
    return;
  }
  if (blocked_ && (!options_.backfill || (verdict & kFailed) || SurelyBlocked(g))) {
    out.waiting.push_back(
        {qi, out.reservation.job_id.empty() ? WaitReason::kResources : WaitReason::kReserved});
    return;
  }
  PackResult pack;
  if (!SurelyBlocked(g)) pack = PackWithIndex(g, hosts_, free_, reserved_, topo_, scratch_);
  if (!pack.shares.empty()) {
    Apply(g, pack);
    GangPlacement p;
    p.queue_index = qi;
    p.job_id = g.job_id;
    p.rank_hosts = SharesToRanks(pack.shares);
    p.hosts_used = static_cast<int>(pack.shares.size());
    p.single_topology = pack.single_topology;
    p.queue_wait = now - g.submitted;
    out.placed.push_back(std::move(p));
    UpdateStats(g, pack);
    return;
  }
  verdict |= kFailed;
  WaitReason reason = WaitReason::kResources;
  if (!blocked_) {
    blocked_ = true;
    out.reservation = Reserve(g);
    for (int h : out.reservation.host_indices) reserved_[h] = true;
    RecomputeStats();
  } else if (!out.reservation.job_id.empty()) {
    reason = WaitReason::kReserved;
  }
  out.waiting.push_back({qi, reason});
}

void Pass::Run(const std::vector<GangRequest>& queue, SchedClock::time_point now,
               ScheduleResult& out) {
  auto before = [&](int a, int b) {
    if (queue[a].priority != queue[b].priority) return queue[a].priority > queue[b].priority;
    return queue[a].sequence < queue[b].sequence;
  };
  std::vector<int> order(queue.size());
  std::iota(order.begin(), order.end(), 0);
  if (!std::is_sorted(order.begin(), order.end(), before))
    std::stable_sort(order.begin(), order.end(), before);
  RecomputeStats();
  out.waiting.reserve(queue.size());
  for (int qi : order) {
    const GangRequest& g = queue[qi];
    if (QuotaBlocked(g, out, qi)) continue;
    // Fast path for a full cluster: nothing free can hold this job; its shape was already
    // judged feasible or not earlier in the pass or will be on the slow path.
    if (blocked_ && SurelyBlocked(g)) {
      auto it = verdicts_.find(ShapeKey{g.ranks, g.gpus_per_rank, g.cpus_per_rank, &g.labels});
      const uint8_t verdict = it == verdicts_.end() ? 0 : it->second;
      if (verdict & kInfeasible) {
        out.waiting.push_back({qi, WaitReason::kInfeasible});
        continue;
      }
      if (verdict & kFeasible) {
        out.waiting.push_back(
            {qi, out.reservation.job_id.empty() ? WaitReason::kResources : WaitReason::kReserved});
        continue;
      }
    }
    PlaceOrBlock(g, qi, now, out);
  }
}

}  // namespace

std::string WaitMessage(const GangRequest& g, WaitReason reason, const SchedulerOptions& options,
                        const ClusterView& view) {
  const int demand = g.ranks * g.gpus_per_rank;
  switch (reason) {
    case WaitReason::kQuota: {
      auto used = view.tenant_gpus_used.find(g.tenant);
      return "tenant '" + g.tenant + "' uses " +
             std::to_string(used == view.tenant_gpus_used.end() ? 0 : used->second) + " of " +
             std::to_string(options.tenant_gpu_quota.at(g.tenant)) + " GPUs; needs " +
             std::to_string(demand) + " more";
    }
    case WaitReason::kInfeasible: {
      auto quota = options.tenant_gpu_quota.find(g.tenant);
      if (quota != options.tenant_gpu_quota.end() && demand > quota->second)
        return "needs " + std::to_string(demand) + " GPUs but tenant '" + g.tenant + "' quota is " +
               std::to_string(quota->second) + "; raise the quota or shrink the job";
      return "needs " + Describe(g) + "; no set of schedulable hosts" +
             (g.labels.empty() ? "" : " with the requested labels") +
             " can hold it: add workers or shrink the job";
    }
    case WaitReason::kReserved:
      return "waiting for " + Describe(g) + " (free hosts are reserved for an older job)";
    case WaitReason::kResources:
      return "waiting for " + Describe(g);
  }
  return "waiting";
}

ScheduleResult Schedule(const std::vector<GangRequest>& queue, const ClusterView& view,
                        const SchedulerOptions& options, SchedClock::time_point now) {
  ScheduleResult out;
  Pass pass(view, options);
  pass.Run(queue, now, out);
  return out;
}

}  // namespace gantry::coordinator
