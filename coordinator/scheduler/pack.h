// Internal helpers of the scheduler: per-host rank capacity, label matching, topology groups
// and the packing of one gang. Exposed for the scheduler's own .cc files and its tests.
#pragma once

#include <string>
#include <vector>

#include "coordinator/scheduler/scheduler.h"

namespace gantry::coordinator {

// Whole ranks of `gang` that fit on `host` (free resources, or totals when use_total).
int RankCapacity(const HostState& host, const GangRequest& gang, bool use_total);
bool LabelsMatch(const HostState& host, const GangRequest& gang);

struct TopologyIndex {
  std::vector<int> group_of_host;  // group id per host (hosts without the label share one)
  int num_groups = 1;
};
TopologyIndex BuildTopologyIndex(const std::vector<HostState>& hosts, const std::string& key);

struct HostShare {
  int host = 0;   // host index
  int count = 0;  // ranks on it
};
struct PackResult {
  std::vector<HostShare> shares;  // empty: does not fit
  bool single_topology = true;
};
// Packs over hosts that are schedulable, match the gang's labels and are not `excluded`.
// `scratch` is reused between calls to avoid allocation (one per caller thread).
struct PackScratch {
  std::vector<std::vector<HostShare>> groups;
  std::vector<int> group_sum;
  std::vector<HostShare> all;
};
PackResult PackWithIndex(const GangRequest& gang, const std::vector<HostState>& hosts,
                         const std::vector<bool>& excluded, const TopologyIndex& topo,
                         PackScratch& scratch);
std::vector<int> SharesToRanks(const std::vector<HostShare>& shares);

}  // namespace gantry::coordinator
