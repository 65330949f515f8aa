// Gang packing: fewest hosts, best fit for the remainder, one topology group when it can.
// Capacities are counted in whole ranks per host, so a rank never straddles hosts.
#include "coordinator/scheduler/pack.h"

#include <algorithm>
#include <limits>
#include <numeric>
#include <unordered_map>

namespace gantry::coordinator {

int RanksFitting(int gpus, int cpus, const GangRequest& gang) {
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
                         const FreeView& free, const std::vector<bool>& excluded,
                         LazyTopology& lazy_topo, PackScratch& scratch) {
  PackResult best;
  if (gang.ranks <= 0) return best;
  // First scan: the best single-host fit (smallest room >= ranks) and the total room.
  int total = 0, single = -1, single_cap = 0;
  scratch.all.clear();
  for (size_t h = 0; h < hosts.size(); ++h) {
    if (free.gpus[h] < gang.gpus_per_rank || free.cpus[h] < gang.cpus_per_rank) continue;
    if (excluded[h] || !hosts[h].schedulable) continue;
    const int cap = RanksFitting(free.gpus[h], free.cpus[h], gang);
    if (cap <= 0) continue;
    if (!gang.labels.empty() && !LabelsMatch(hosts[h], gang)) continue;
    if (cap >= gang.ranks && (single < 0 || cap < single_cap)) {
      single = static_cast<int>(h);
      single_cap = cap;
      if (cap == gang.ranks) break;  // an exact fit cannot be beaten
    }
    scratch.all.push_back({static_cast<int>(h), cap});
    total += cap;
  }
  if (single >= 0) {  // one host is the fewest possible
    best.shares.push_back({single, gang.ranks});
    return best;
  }
  if (total < gang.ranks) return best;
  // Several hosts: prefer one topology group, fewest hosts, then the tightest group.
  const TopologyIndex& topo = lazy_topo.Get();
  scratch.groups.resize(topo.num_groups);
  for (auto& g : scratch.groups) g.clear();
  scratch.group_sum.assign(topo.num_groups, 0);
  for (const HostShare& s : scratch.all) {
    const int g = topo.group_of_host[s.host];
    scratch.groups[g].push_back(s);
    scratch.group_sum[g] += s.count;
  }
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
  LazyTopology topo(hosts, topology_key);
  std::vector<bool> excluded(hosts.size(), true);
  for (int h : candidates) excluded[h] = false;
  FreeView free;
  for (const HostState& h : hosts) {
    free.gpus.push_back(h.gpus_free);
    free.cpus.push_back(h.cpus_free);
  }
  PackScratch scratch;
  PackResult result = PackWithIndex(gang, hosts, free, excluded, topo, scratch);
  return SharesToRanks(result.shares);
}

std::vector<int> SharesToRanks(const std::vector<HostShare>& shares) {
  std::vector<int> rank_hosts;
  for (const HostShare& s : shares) rank_hosts.insert(rank_hosts.end(), s.count, s.host);
  return rank_hosts;
}

}  // namespace gantry::coordinator
