// CPU binding of the ranks that share a host, as `mpirun --bind-to core` does: each local rank
// gets a disjoint, equal slice of the CPUs, so its compute and communication threads stay on
// cores whose caches hold its data, and ranks do not preempt each other. Measured on 2 ranks x
// 1 thread (mlp-mnist, shm, 2 cores): data-parallel steps 3.30 -> 3.18 ms and the exposed
// communication 13-17% -> 8-11% (train/README.md).
// GANTRY_BIND (tunable):
//   auto (default): bind when LOCAL_RANK / LOCAL_WORLD_SIZE (or Open MPI's local rank/size)
//        say there are several local ranks and the process may run on every online CPU
//        (nobody restricted it: a worker's cpuset, taskset or a container quota is left as is);
//   core: split whatever CPU set the process has among the local ranks, even a restricted one;
//   none: never bind.
// Call before any thread starts (threads inherit the mask); idempotent.
#pragma once

#include <string>
#include <vector>

#include "base/status.h"

namespace gantry::train {

struct CpuBindingPlan {
  bool bind = false;
  std::vector<int> cpus;  // this rank's CPUs when bind
  std::string reason;     // why (not) bound, for the log
};

// The decision, from explicit inputs (tested without touching the process): `allowed` is the
// process's CPU set (sorted), `online` the machine's CPU count, `mode` GANTRY_BIND's value.
StatusOr<CpuBindingPlan> PlanCpuBinding(const std::string& mode, const std::vector<int>& allowed,
                                        int online, int local_rank, int local_world);

// Reads GANTRY_BIND (a malformed value is logged and auto used, as for every tunable), the
// local rank/size and the affinity mask, applies the plan (sched_setaffinity) and logs it.
// kInvalidArgument when LOCAL_RANK is not below LOCAL_WORLD_SIZE.
StatusOr<CpuBindingPlan> BindLocalRank();

// True once BindLocalRank bound this process: its CPU set is already its share of the host.
bool LocalRankBound();

// Local rank and local rank count from LOCAL_RANK / LOCAL_WORLD_SIZE (gantry workers, torchrun)
// or Open MPI's; -1 / 1 when not set.
int LocalRankFromEnv();
int LocalWorldFromEnv();

}  // namespace gantry::train
