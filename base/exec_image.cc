// ExecImage: argv/envp for fork + exec, merged from this process's environment.
#include "base/exec_image.h"

#include <algorithm>
#include <cstring>

extern char** environ;

namespace gantry {

ExecImage::ExecImage(std::vector<std::string> argv,
                     const std::map<std::string, std::string>& overrides,
                     const std::vector<std::string>& unset)
    : args_(std::move(argv)) {
  for (char** e = environ; *e != nullptr; ++e) {
    const char* eq = std::strchr(*e, '=');
    if (eq == nullptr) continue;
    const std::string name(*e, eq - *e);
    if (overrides.count(name) || std::find(unset.begin(), unset.end(), name) != unset.end()) {
      continue;
    }
    env_.emplace_back(*e);
  }
  for (const auto& [k, v] : overrides) env_.push_back(k + "=" + v);
  for (std::string& a : args_) argv_.push_back(a.data());
  argv_.push_back(nullptr);
  for (std::string& kv : env_) envp_.push_back(kv.data());
  envp_.push_back(nullptr);
}

}  // namespace gantry
