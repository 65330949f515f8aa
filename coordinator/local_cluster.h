// LocalCluster: `gantry up` — a coordinator and N workers on this host as child processes of
// the calling gantry binary, logs in <dir>/logs/, the endpoint in <dir>/coordinator (read by
// the other commands). Stop() ends every child it started, by PID: SIGTERM, then SIGKILL.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

#include "base/status.h"

namespace gantry::coordinator {

struct LocalClusterOptions {
  std::string exe;  // the gantry binary ("" = /proc/self/exe)
  std::string dir = ".gantry";
  int workers = 1;
  int port = 7450;           // coordinator port on 127.0.0.1 (0 = pick a free one)
  int cpus_per_worker = 0;   // 0 = usable cores
  int gpus_per_worker = -1;  // -1 = detect
  int metrics_port = -1;
  std::vector<std::string> coordinator_args;  // extra flags for `gantry coordinator`
};

class LocalCluster {
 public:
  explicit LocalCluster(LocalClusterOptions options) : opt_(std::move(options)) {}
  ~LocalCluster() { Stop(); }
  // Starts everything and waits (up to 15 s) until every worker has registered.
  Status Start();
  void Stop();
  const std::string& endpoint() const { return endpoint_; }
  // Processes that died on their own (name and exit description); empty while healthy.
  std::vector<std::string> Dead();

 private:
  struct Child {
    std::string name;
    pid_t pid;
    bool reaped = false;
  };
  StatusOr<pid_t> Spawn(const std::string& name, const std::vector<std::string>& args);
  LocalClusterOptions opt_;
  std::vector<Child> children_;
  std::string endpoint_;
  bool wrote_endpoint_ = false;  // <dir>/coordinator is ours to remove
};

}  // namespace gantry::coordinator
