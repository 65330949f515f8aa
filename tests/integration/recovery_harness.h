// Harness of the exact-recovery test: a dev Ceph cluster (reused from $GANTRY_CEPH_URI when
// scripts/test.sh started one, else scripts/ceph-dev.sh start/stop in a temp dir), a
// `gantry up` local cluster, commands run with a deadline, and a watchdog that stops both if
// the test process dies without its teardown. Every process is ended by its PID.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <string>
#include <vector>

namespace gantry::testing {

using std::chrono::milliseconds;
using std::chrono::seconds;

struct CommandResult {
  int exit_code = -1;  // -1: could not run, or killed at the deadline
  std::string output;  // stdout + stderr
};

// Runs argv (argv[0] on PATH or a path) to completion or the deadline (then SIGKILL by PID).
CommandResult RunCommand(const std::vector<std::string>& argv, seconds timeout);

// Starts `cmd` (bash) in a new session; it runs once this process is gone (crash, ctest
// timeout kill). Returns the watchdog's PID: StopWatchdog once the normal teardown has run.
pid_t StartWatchdog(const std::string& cmd);
void StopWatchdog(pid_t pid);

// The dev Ceph cluster; GANTRY_CEPH_URI is "ceph://pool/?conf=..&id=..&keyring=..".
class CephDev {
 public:
  // Reuses $GANTRY_CEPH_URI, or starts scripts/ceph-dev.sh in a temp dir and exports its
  // environment (CEPH_CONF, GANTRY_CEPH_*) into this process for the children. Empty `error`
  // = ok; else it says what failed with the script's output.
  void Start(std::string* error);
  // Stops the cluster this object started (never a reused one). Idempotent.
  void Stop();
  ~CephDev() { Stop(); }
  bool started_here() const { return !dir_.empty(); }
  // "ceph://pool/<prefix>?<query of GANTRY_CEPH_URI>"
  std::string Uri(const std::string& prefix) const;

 private:
  std::string uri_, dir_;
  pid_t watchdog_ = -1;
};

// `gantry up --workers N` in `dir` (coordinator + workers as its children, on 127.0.0.1).
class GantryUp {
 public:
  // Empty `error` = up and every worker registered (`up` prints its banner after that).
  void Start(const std::string& gantry, const std::filesystem::path& dir, int workers,
             int cpus_per_worker, std::string* error);
  // SIGTERM (up stops coordinator and workers; workers stop their ranks), SIGKILL after 15 s.
  void Stop();
  ~GantryUp() { Stop(); }
  const std::string& endpoint() const { return endpoint_; }
  std::string ReadLog() const;

 private:
  std::filesystem::path dir_;
  pid_t pid_ = -1, watchdog_ = -1;
  std::string endpoint_;
};

}  // namespace gantry::testing
