// PeerProcess: a child process (the PyTorch peer) driven over pipes with one-line requests and
// one-line JSON replies. Every read has a timeout; Stop() ends the child by its PID (EOF on
// stdin, then SIGKILL if it has not exited within the grace period). Not thread-safe.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <map>
#include <string>
#include <vector>

#include "base/status.h"

namespace gantry::bench {

class PeerProcess {
 public:
  PeerProcess() = default;
  ~PeerProcess() { Stop(); }
  PeerProcess(const PeerProcess&) = delete;
  PeerProcess& operator=(const PeerProcess&) = delete;

  // Starts argv[0] (a path) with `argv` and the current environment plus `env` overrides.
  Status Start(const std::vector<std::string>& argv, const std::map<std::string, std::string>& env);
  // Writes `line` + '\n' to the child's stdin.
  Status Send(const std::string& line);
  // Next line of the child's stdout (without '\n'); kDeadlineExceeded after `timeout`,
  // kUnavailable when the child closed stdout (its exit status is in the message).
  StatusOr<std::string> ReadLine(std::chrono::milliseconds timeout);
  // Closes stdin, waits up to `grace` for the child, then SIGKILLs and reaps it. Idempotent.
  void Stop(std::chrono::milliseconds grace = std::chrono::milliseconds(5000));
  pid_t pid() const { return pid_; }

 private:
  std::string ExitDescription();

  pid_t pid_ = -1;
  int to_child_ = -1;
  int from_child_ = -1;
  std::string buffer_;  // bytes read but not yet returned as a line
};

}  // namespace gantry::bench
