// WorkerAgent: the per-host agent. Registers its resources with the coordinator, heartbeats
// every interval, launches ranks as child processes with the torchrun environment, streams
// their output lines, reports exits (re-sent until acknowledged), stops gangs on request
// (SIGTERM, then SIGKILL after the grace period), and reconnects with exponential backoff
// when the coordinator goes away, re-reporting its running ranks so they are re-adopted.
// One thread (Run's caller) owns the DEALER socket and every child.
#pragma once

#include <atomic>
#include <chrono>
#include <map>
#include <memory>
#include <string>

#include "base/status.h"

namespace gantry::worker {

struct WorkerOptions {
  std::string coordinator = "tcp://127.0.0.1:7450";
  std::string worker_id;  // "" = hostname
  std::string address;    // MASTER_ADDR when this host runs rank 0; "" = the local address
                          // that routes to the coordinator
  std::string dir = ".gantry/worker";  // per-attempt files (the spec of train jobs)
  int cpu_slots = 0;                   // 0 = usable cores
  int gpus = -1;                       // -1 = detect with the CUDA runtime; >= 0 overrides
  // Pin each rank to cpus_per_rank cores of its own (worker/cpu_pool.h); off when the slots
  // exceed the CPUs this process may use (then ranks run unpinned, as without the option).
  bool pin_cpus = false;
  std::map<std::string, std::string> labels;
  std::string self_exe;  // the gantry binary for train/serve ranks; "" = /proc/self/exe
  // CURVE (all or none): coordinator public key, this worker's key pair.
  std::string server_public_key, public_key, secret_key;
  // The files those came from: given to ranks as GANTRY_SERVER_KEY / GANTRY_CLIENT_KEY, so
  // train ranks reach the coordinator's rendezvous KV through CURVE too.
  std::string server_key_file, key_file;
  std::chrono::milliseconds register_timeout{2000};
  std::chrono::milliseconds max_backoff{8000};
  // Prometheus /metrics (gantry_worker_*: connected, ranks running, launches, exits by
  // outcome, reconnects, slots) on metrics_host:metrics_port; 0 = a free port, -1 = off.
  int metrics_port = -1;
  std::string metrics_host = "127.0.0.1";
};

class WorkerAgent {
 public:
  static StatusOr<std::unique_ptr<WorkerAgent>> Create(WorkerOptions options);
  ~WorkerAgent();
  // Runs until `stop` is true; then stops every rank (SIGTERM, SIGKILL after 3 s).
  Status Run(const std::atomic<bool>& stop);
  // The /metrics port once Create returned (-1: off).
  int metrics_port() const;

 private:
  struct Impl;
  explicit WorkerAgent(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace gantry::worker
