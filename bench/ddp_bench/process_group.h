// ProcessGroup: the child processes of one benchmark run (the ranks of a job, or two
// independent trainers), each with its own environment and a log file for stdout + stderr.
// WaitAll() has a deadline; when one child fails the others are killed (a rank whose peer died
// would only wait for its comm timeout). Every child is ended by its PID; the destructor kills
// and reaps whatever is still running. Not thread-safe.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <map>
#include <string>
#include <vector>

#include "base/status.h"

namespace gantry::bench {

struct ChildSpec {
  std::vector<std::string> argv;              // argv[0] is a path or a name on PATH
  std::map<std::string, std::string> env;     // overrides of this process's environment
  std::vector<std::string> unset_env;         // removed from the child's environment
  std::string log_path;                       // stdout and stderr (truncated at start)
};

class ProcessGroup {
 public:
  ProcessGroup() = default;
  ~ProcessGroup() { KillAll(); }
  ProcessGroup(const ProcessGroup&) = delete;
  ProcessGroup& operator=(const ProcessGroup&) = delete;

  Status Start(const ChildSpec& spec);
  // Waits until every child exited. kDeadlineExceeded after `timeout` (all killed); a child
  // that exits non-zero or by a signal kills the rest and returns kAborted naming it and its
  // log file.
  Status WaitAll(std::chrono::seconds timeout);
  // SIGKILL to every child still running, then reap. Idempotent.
  void KillAll();

 private:
  struct Child {
    pid_t pid = -1;
    std::string name;  // argv joined, for messages
    std::string log_path;
    bool done = false;
  };
  std::vector<Child> children_;
};

// A TCP port on 127.0.0.1 that was free a moment ago (for MASTER_PORT).
StatusOr<int> FreeLoopbackPort();

}  // namespace gantry::bench
