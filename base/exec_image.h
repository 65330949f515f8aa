// ExecImage: the argv and envp blocks for a fork + exec, built before fork. The child of a
// multi-threaded parent may only make async-signal-safe calls (no setenv, no allocation), so
// everything it hands to execve/execvpe is prepared here and only read in the child.
#pragma once

#include <map>
#include <string>
#include <vector>

namespace gantry {

class ExecImage {
 public:
  // argv as given; the environment is this process's, minus the `unset` names, with
  // `overrides` added or replacing.
  ExecImage(std::vector<std::string> argv, const std::map<std::string, std::string>& overrides,
            const std::vector<std::string>& unset = {});
  ExecImage(const ExecImage&) = delete;
  ExecImage& operator=(const ExecImage&) = delete;

  char* const* argv() const { return argv_.data(); }
  char* const* envp() const { return envp_.data(); }
  const char* program() const { return argv_[0]; }

 private:
  std::vector<std::string> args_, env_;
  std::vector<char*> argv_, envp_;  // point into args_ / env_, null-terminated
};

}  // namespace gantry
