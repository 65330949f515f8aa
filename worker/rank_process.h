// RankProcess: one rank as a child process in its own process group, its stdout and stderr
// read line by line through non-blocking pipes. Stop() sends SIGTERM to the whole group and
// SIGKILL after the grace period (Poll enforces it). Owned by the worker loop thread.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "base/status.h"

namespace gantry::worker {

struct LaunchSpec {
  std::vector<std::string> argv;
  std::map<std::string, std::string> env;  // added to (and overriding) the worker's environment
  std::string workdir;
  std::vector<int> cpus;  // pin the child to these CPUs before exec (empty: inherit)
  // How long Start waits for the exec to succeed or fail (a failure then is Start's error);
  // past it the launch counts as started and a late failure shows as exit 127.
  std::chrono::milliseconds exec_wait{5000};
};

struct OutputLine {
  std::string stream;  // "stdout" | "stderr"
  std::string text;    // without the newline; long lines are split at kMaxLineBytes
  int64_t time_ms;
};

class RankProcess {
 public:
  static constexpr size_t kMaxLineBytes = 16384;
  static constexpr size_t kMaxDrainBytes = size_t{1} << 20;  // per stream per ReadOutput call
  // Forks and execs. Errors: kInvalidArgument (empty argv, missing workdir), kSystemError.
  // A program that cannot be exec'd exits with 127 and says why on stderr. The child runs in
  // its own process group and gets SIGKILL when the agent dies (PR_SET_PDEATHSIG); call Start
  // from a thread that lives as long as the agent (the signal follows the forking thread).
  static StatusOr<std::unique_ptr<RankProcess>> Start(const LaunchSpec& spec);
  ~RankProcess();  // kills the group if still running

  pid_t pid() const { return pid_; }
  int stdout_fd() const { return out_fd_; }
  int stderr_fd() const { return err_fd_; }
  // Reads what is available; appends complete lines (and, after exit, the last partial one).
  void ReadOutput(std::vector<OutputLine>& lines);
  // Reaps the child if it exited; true once it has. Also sends SIGKILL when a stop's grace ran out.
  bool Poll();
  bool exited() const { return exited_; }
  // Exit status, or 128 + signal number when killed by a signal.
  int exit_code() const { return exit_code_; }
  std::string exit_description() const;  // "exit 3", "killed by SIGKILL"
  // SIGTERM to the group now, SIGKILL after `grace`.
  void Stop(std::chrono::milliseconds grace);
  bool stopping() const { return stopping_; }

 private:
  RankProcess() = default;
  void Drain(int& fd, std::string& buf, const char* stream, std::vector<OutputLine>& lines,
             bool final);
  pid_t pid_ = -1;
  int out_fd_ = -1, err_fd_ = -1;
  std::string out_buf_, err_buf_;
  bool exited_ = false;
  int exit_code_ = 0, signal_ = 0;
  bool stopping_ = false;
  std::chrono::steady_clock::time_point kill_at_{};
};

}  // namespace gantry::worker
