// CPU binding of local ranks: the plan (pure) and its application (sched_setaffinity).
#include "train/cpu_binding.h"

#include <sched.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "base/cpu_set.h"
#include "base/logging.h"
#include "base/tunables.h"

namespace gantry::train {
namespace {

std::atomic<bool> g_bound{false};

int EnvInt(const char* a, const char* b, int dflt) {
  for (const char* v : {a, b}) {
    const char* s = std::getenv(v);
    if (s == nullptr || *s == '\0') continue;
    char* end = nullptr;
    const long n = std::strtol(s, &end, 10);
    if (end != s && *end == '\0' && n >= 0) return int(n);
  }
  return dflt;
}

}  // namespace

int LocalRankFromEnv() { return EnvInt("LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_RANK", -1); }
int LocalWorldFromEnv() {
  const int n = EnvInt("LOCAL_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_SIZE", 1);
  return n > 0 ? n : 1;
}

StatusOr<CpuBindingPlan> PlanCpuBinding(const std::string& mode, const std::vector<int>& allowed,
                                        int online, int local_rank, int local_world) {
  if (mode != "auto" && mode != "core" && mode != "none") {
    return InvalidArgumentError("GANTRY_BIND is '" + mode + "': expected auto, core or none");
  }
  CpuBindingPlan p;
  if (mode == "none") {
    p.reason = "GANTRY_BIND=none";
    return p;
  }
  if (local_world <= 1 || local_rank < 0) {
    p.reason = "one rank on this host (or LOCAL_RANK unknown)";
    return p;
  }
  if (local_rank >= local_world) {
    return InvalidArgumentError("LOCAL_RANK " + std::to_string(local_rank) +
                                " is not below LOCAL_WORLD_SIZE " + std::to_string(local_world));
  }
  if (mode == "auto" && int(allowed.size()) != online) {
    p.reason = "the process may use " + std::to_string(allowed.size()) + " of " +
               std::to_string(online) + " CPUs (set by its launcher): left as is";
    return p;
  }
  const size_t per = allowed.size() / size_t(local_world);
  if (per == 0) {
    p.reason = std::to_string(local_world) + " local ranks on " + std::to_string(allowed.size()) +
               " CPUs: not enough to give each its own";
    return p;
  }
  p.bind = true;
  p.cpus.assign(allowed.begin() + long(per) * local_rank, allowed.begin() + long(per) * (local_rank + 1));
  p.reason = "local rank " + std::to_string(local_rank) + " of " + std::to_string(local_world) +
             ": " + std::to_string(per) + " of " + std::to_string(allowed.size()) + " CPUs";
  return p;
}

StatusOr<CpuBindingPlan> BindLocalRank() {
  GANTRY_ASSIGN_OR_RETURN(const std::vector<int> allowed, AffinityCpus());
  const int online = int(sysconf(_SC_NPROCESSORS_ONLN));
  std::string mode = TunableString("BIND", "auto");
  if (mode != "auto" && mode != "core" && mode != "none") {  // as every tunable: warn, default
    GANTRY_LOG(WARNING, "malformed tunable; using the default")
        .Field("variable", "GANTRY_BIND")
        .Field("value", mode)
        .Field("expected", "auto, core or none");
    mode = "auto";
  }
  GANTRY_ASSIGN_OR_RETURN(CpuBindingPlan plan, PlanCpuBinding(mode, allowed, online,
                                                              LocalRankFromEnv(),
                                                              LocalWorldFromEnv()));
  if (plan.bind && !g_bound.load()) {
    GANTRY_ASSIGN_OR_RETURN(const cpu_set_t mine, ToCpuSet(plan.cpus));
    if (sched_setaffinity(0, sizeof(mine), &mine) != 0) {
      plan.bind = false;
      plan.reason = std::string("sched_setaffinity failed: ") + std::strerror(errno);
    } else {
      g_bound.store(true);
    }
  }
  GANTRY_LOG(INFO, "cpu binding")
      .Field("bound", plan.bind)
      .Field("cpus", CpuListString(plan.bind ? plan.cpus : allowed))
      .Field("reason", plan.reason);
  return plan;
}

bool LocalRankBound() { return g_bound.load(); }

}  // namespace gantry::train
