// CPU sets: this process's affinity mask, a cpu_set_t from a list, and the kernel's cpulist
// notation ("0-3,6"). Shared by the trainer's local-rank binding (train/cpu_binding.h) and the
// worker's per-rank pinning (worker/cpu_pool.h).
#pragma once

#include <sched.h>

#include <string>
#include <vector>

#include "base/status.h"

namespace gantry {

// The CPUs this process may run on, ascending (sched_getaffinity).
StatusOr<std::vector<int>> AffinityCpus();
// A set holding `cpus`; kInvalidArgument naming a CPU outside [0, CPU_SETSIZE). Build it before
// fork when the child applies it (sched_setaffinity is all the child then calls).
StatusOr<cpu_set_t> ToCpuSet(const std::vector<int>& cpus);
// "0-3,6,8-9" (sorted, duplicates dropped); "" for none.
std::string CpuListString(const std::vector<int>& cpus);

}  // namespace gantry
