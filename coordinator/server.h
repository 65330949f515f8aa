// Coordinator: the API server. One thread owns the ZeroMQ ROUTER socket and runs the loop:
// receive an Envelope, check version, size and authority, dispatch to the JobManager /
// WorkerRegistry / Rendezvous, reply, send queued LaunchRank/StopRanks, run timers.
// A malformed or oversized message gets an error reply, never a crash.
// Security: binds 127.0.0.1 by default; any other address requires CURVE keys, an allow-list
// of client/worker public keys (checked by a ZAP handler thread) and a tokens file.
#pragma once

#include <atomic>
#include <chrono>
#include <memory>
#include <string>

#include "base/status.h"
#include "coordinator/job_manager.h"

namespace gantry::coordinator {

struct CoordinatorOptions {
  std::string bind = "tcp://127.0.0.1:7450";  // port 0: pick one (see Coordinator::endpoint)
  std::string advertise;                      // endpoint given to workers' ranks; "" = bound
  std::string state_dir = ".gantry";          // gantry.db lives here
  std::chrono::milliseconds heartbeat_interval{1000};
  int lost_after_missed = 5;
  std::string secret_key_file;  // CURVE server secret key (gantry keys gen)
  std::string allow_list;       // directory of *.pub or file of public keys
  std::string tokens_file;      // lines "TOKEN TENANT [admin]"; submit/cancel need a token
  int metrics_port = -1;        // -1: no HTTP; 0: any free port
  std::string metrics_host = "127.0.0.1";
  int max_job_log_mb = 256;     // stored output per job; the oldest lines go past it (0: no cap)
  ManagerOptions manager;
};

class Coordinator {
 public:
  static StatusOr<std::unique_ptr<Coordinator>> Create(CoordinatorOptions options);
  ~Coordinator();

  // Serves until `stop` becomes true (checked every 100 ms).
  Status Run(const std::atomic<bool>& stop);
  std::string endpoint() const;  // actually bound, e.g. tcp://127.0.0.1:7450
  int metrics_port() const;

 private:
  struct Impl;
  explicit Coordinator(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace gantry::coordinator
