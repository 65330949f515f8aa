// CpuPool: exclusive CPUs for the ranks a worker runs (`gantry worker --pin-cpus`), as
// kubelet's static CPU manager does for pods. The pool is the agent's own CPU set (its
// affinity mask), cut to the worker's CPU slots; a rank asking for n CPUs gets the n lowest
// free ones and is pinned to them before it execs, so jobs sharing a host never share cores
// and a rank's threads (OpenMP, oneDNN, `gantry train`'s own binding) see only its CPUs.
// Not thread-safe: owned by the agent's loop thread.
#pragma once

#include <optional>
#include <vector>

namespace gantry::worker {

class CpuPool {
 public:
  // `cpus`: the CPU numbers it may hand out (duplicates ignored).
  explicit CpuPool(std::vector<int> cpus);
  // The pool for a worker offering `slots` CPU slots (0 = every allowed CPU; `allowed` is
  // the agent's affinity mask, base/cpu_set.h), or nullopt when the slots exceed the CPUs it
  // may use: overcommitted slots cannot be exclusive cores.
  static std::optional<CpuPool> ForSlots(int slots, const std::vector<int>& allowed);

  // The n lowest free CPUs, now taken; nullopt (nothing taken) when fewer than n are free or
  // n <= 0.
  std::optional<std::vector<int>> Take(int n);
  // Returns CPUs taken before (others are ignored).
  void Give(const std::vector<int>& cpus);
  size_t free_count() const;
  size_t size() const { return cpus_.size(); }

 private:
  std::vector<int> cpus_;   // ascending
  std::vector<bool> used_;  // parallel to cpus_
};

}  // namespace gantry::worker
