// Internal helpers of the scheduler: per-host rank capacity, label matching, topology groups
// and the packing of one gang. Exposed for the scheduler's own .cc files and its tests.
#pragma once

#include <string>
#include <vector>

#include "coordinator/scheduler/scheduler.h"

namespace gantry::coordinator {

// Whole ranks of `gang` that fit in `gpus` and `cpus` (not clipped to gang.ranks).
int RanksFitting(int gpus, int cpus, const GangRequest& gang);
// Whole ranks of `gang` that fit on `host` (free resources, or totals when use_total).
inline int RankCapacity(const HostState& host, const GangRequest& gang, bool use_total) {
  return use_total ? RanksFitting(host.gpus_total, host.cpus_total, gang)
                   : RanksFitting(host.gpus_free, host.cpus_free, gang);
}
bool LabelsMatch(const HostState& host, const GangRequest& gang);

struct TopologyIndex {
  std::vector<int> group_of_host;  // group id per host (hosts without the label share one)
  int num_groups = 1;
};
TopologyIndex BuildTopologyIndex(const std::vector<HostState>& hosts, const std::string& key);

// Built on first use: most gangs fit one host and never need the grouping.
class LazyTopology {
 public:
  LazyTopology(const std::vector<HostState>& hosts, const std::string& key)
      : hosts_(hosts), key_(key) {}
  const TopologyIndex& Get() {
    if (!built_) {
      index_ = BuildTopologyIndex(hosts_, key_);
      built_ = true;
    }
    return index_;
  }

 private:
  const std::vector<HostState>& hosts_;
  const std::string& key_;
  TopologyIndex index_;
  bool built_ = false;
};

// Free resources per host during a pass (the HostState vector itself stays untouched).
struct FreeView {
  std::vector<int> gpus, cpus;
};

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
                         const FreeView& free, const std::vector<bool>& excluded,
                         LazyTopology& topo, PackScratch& scratch);
std::vector<int> SharesToRanks(const std::vector<HostShare>& shares);

}  // namespace gantry::coordinator
