// Processes a rank leaves behind. Stopping a rank kills its process group, which misses a
// child that started its own session (setsid, a daemon) and, after a kill -9 of the worker,
// everything below the rank leaders (PR_SET_PDEATHSIG ends only the leaders). Every rank's
// environment carries GANTRY_WORKER_DIR (the worker's directory, which one worker holds at a
// time) and GANTRY_RANK_KEY ("job/attempt/rank"), which its descendants inherit: the worker
// is the child subreaper of its ranks' descendants, so orphans become its children and can be
// attributed and killed once their rank is done, and a worker starting on a directory kills
// what a previous worker there left.
#pragma once

#include <sys/types.h>

#include <optional>
#include <set>
#include <string>
#include <vector>

namespace gantry::worker {

inline constexpr char kWorkerDirEnv[] = "GANTRY_WORKER_DIR";
inline constexpr char kRankKeyEnv[] = "GANTRY_RANK_KEY";
inline constexpr char kWorkerPidEnv[] = "GANTRY_WORKER_PID";

// The value of `name` in process `pid`'s initial environment (nullopt: unset, or unreadable:
// the process is gone, a zombie, or another user's).
std::optional<std::string> EnvOf(pid_t pid, const std::string& name);

// This process's children (every thread's), except those in `leaders`.
std::vector<pid_t> ChildrenExcept(const std::set<pid_t>& leaders);

// True when `pid` runs (not a zombie) a gantry worker: a reused pid (say, a leftover's own
// child) or a dead worker not yet reaped does not count.
bool IsLiveWorker(pid_t pid);

// Every process but this one whose environment has GANTRY_WORKER_DIR=dir.
std::vector<pid_t> ProcessesOfWorkerDir(const std::string& dir);

}  // namespace gantry::worker
