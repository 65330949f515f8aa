// Gang packing: fewest hosts, best fit for the remainder, one topology group when it can.
// Capacities are counted in whole ranks per host, so a rank never straddles hosts.
#include <algorithm>
#include <limits>
#include <numeric>
#include <unordered_map>

#include "coordinator/scheduler/pack.h"

namespace gantry::coordinator {

int RankCapacity(const HostState& host, const GangRequest& gang, bool use_total) {
  const int gpus = use_total ? host.gpus_total : host.gpus_free;
  const int cpus = use_total ? host.cpus_total : host.cpus_free;
  // Not clipped to gang.ranks: best fit compares how much room each host really has.
  if (gang.gpus_per_rank <= 0 && gang.cpus_per_rank <= 0) return gang.ranks;
  int cap = std::numeric_limits<int>::max();
  if (gang.gpus_per_rank > 0) cap = std::min(cap, gpus / gang.gpus_per_rank);
  if (gang.cpus_per_rank > 0) cap = std::min(cap, cpus / gang.cpus_per_rank);
  return std::max(cap, 0);
}

bool LabelsMatch(const HostState& host, const GangRequest& gang) {
  for (const auto& [key, value] : gang.labels) {
    auto it = host.labels.find(key);
    if (it == host.labels.end() || it->second != value) return false;
  }
  return true;
}

TopologyIndex BuildTopologyIndex(const std::vector<HostState>& hosts, const std::string& key) {
  TopologyIndex index;
  index.group_of_host.resize(hosts.size(), 0);
  if (key.empty()) {
    index.num_groups = 1;
    return index;
  }
  std::unordered_map<std::string, int> ids;
  for (size_t i = 0; i < hosts.size(); ++i) {
    auto it = hosts[i].labels.find(key);
    const std::string value = it == hosts[i].labels.end() ? std::string() : it->second;
    auto [pos, inserted] = ids.emplace(value, static_cast<int>(ids.size()));
    index.group_of_host[i] = pos->second;
  }
  index.num_groups = static_cast<int>(ids.size());
  return index;
}

namespace {

// Fewest hosts for `ranks` over (host, cap) pairs: largest first, then the smallest host that
// still holds the remainder (best fit keeps big hosts whole for big gangs).
std::vector<HostShare> PackCaps(std::vector<HostShare>& caps, int ranks) {
  std::stable_sort(caps.begin(), caps.end(),
                   [](const HostShare& a, const HostShare& b) { return a.count > b.count; });
  std::vector<HostShare> out;
  int remaining = ranks;
  size_t i = 0;
  while (remaining > 0 && i < caps.size() && caps[i].count > 0) {
    if (caps[i].count >= remaining) {
      // caps is sorted descending: the last index with count >= remaining is the best fit.
      size_t best = i;
      while (best + 1 < caps.size() && caps[best + 1].count >= remaining) ++best;
      out.push_back({caps[best].host, remaining});
      return out;
    }
    out.push_back(caps[i]);
    remaining -= caps[i].count;
    ++i;
  }
  return {};
}

}  // namespace

PackResult PackWithIndex(const GangRequest& gang, const std::vector<HostState>& hosts,
                         const std::vector<bool>& excluded, const TopologyIndex& topo,
                         PackScratch& scratch) {
  PackResult best;
  if (gang.ranks <= 0) return best;
  scratch.groups.resize(topo.num_groups);
  for (auto& g : scratch.groups) g.clear();
  scratch.group_sum.assign(topo.num_groups, 0);
  scratch.all.clear();
  // One scan: capacities per group, and the best single-host fit (smallest cap >= ranks).
  int total = 0, single = -1, single_cap = 0;
  for (size_t h = 0; h < hosts.size(); ++h) {
    if (excluded[h] || !hosts[h].schedulable) continue;
    if (!gang.labels.empty() && !LabelsMatch(hosts[h], gang)) continue;
    const int cap = RankCapacity(hosts[h], gang, /*use_total=*/false);
    if (cap <= 0) continue;
    if (cap >= gang.ranks && (single < 0 || cap < single_cap)) {
      single = static_cast<int>(h);
      single_cap = cap;
    }
    const int g = topo.group_of_host[h];
    scratch.groups[g].push_back({static_cast<int>(h), cap});
    scratch.group_sum[g] += cap;
    scratch.all.push_back({static_cast<int>(h), cap});
    total += cap;
  }
  if (single >= 0) {  // one host is the fewest possible
    best.shares.push_back({single, gang.ranks});
    return best;
  }
  if (total < gang.ranks) return best;
  // Prefer one group: fewest hosts, then the tightest group (least left over).
  int best_left = 0;
  for (int g = 0; g < topo.num_groups; ++g) {
    if (scratch.group_sum[g] < gang.ranks) continue;
    std::vector<HostShare> shares = PackCaps(scratch.groups[g], gang.ranks);
    if (shares.empty()) continue;
    const int left = scratch.group_sum[g] - gang.ranks;
    if (best.shares.empty() || shares.size() < best.shares.size() ||
        (shares.size() == best.shares.size() && left < best_left)) {
      best.shares = std::move(shares);
      best_left = left;
      best.single_topology = true;
    }
  }
  if (!best.shares.empty()) return best;
  best.shares = PackCaps(scratch.all, gang.ranks);
  best.single_topology = topo.num_groups <= 1;
  return best;
}

std::vector<int> PackGang(const GangRequest& gang, const std::vector<HostState>& hosts,
                          const std::vector<int>& candidates, const std::string& topology_key) {
  const TopologyIndex topo = BuildTopologyIndex(hosts, topology_key);
  std::vector<bool> excluded(hosts.size(), true);
  for (int h : candidates) excluded[h] = false;
  PackScratch scratch;
  PackResult result = PackWithIndex(gang, hosts, excluded, topo, scratch);
  return SharesToRanks(result.shares);
}

std::vector<int> SharesToRanks(const std::vector<HostShare>& shares) {
  std::vector<int> rank_hosts;
  for (const HostShare& s : shares) rank_hosts.insert(rank_hosts.end(), s.count, s.host);
  return rank_hosts;
}

}  // namespace gantry::coordinator
