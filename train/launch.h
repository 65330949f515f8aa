// Launch: how one `gantry train` process finds the other ranks of its job. The same command
// works in every mode; the environment decides, checked in this order:
//   coordinator  GANTRY_TOKEN set (a gantry worker launched it): rendezvous through the
//                coordinator's KV (the caller supplies that bootstrap: coordinator/ sits above
//                train/), RANK and WORLD_SIZE from the worker;
//   env          RANK (or JOB_COMPLETION_INDEX, Kubernetes Indexed Jobs), WORLD_SIZE,
//                MASTER_ADDR, MASTER_PORT as torchrun sets them; rank 0 hosts the TCP store;
//   mpi          mpirun / srun (OMPI_COMM_WORLD_SIZE, PMI_SIZE, PMIX_RANK): MPI bootstrap;
//   single       none of these, or a world of 1: no communicator.
// The backend is comm.backend (auto: nccl on GPUs, else shm on one host, tcp across hosts),
// overridden by --comm-backend / GANTRY_COMM_BACKEND.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "base/job_spec.h"
#include "base/status.h"
#include "comm/factory.h"

namespace gantry::train {

enum class LaunchMode { kSingle, kCoordinator, kEnv, kMpi };
const char* LaunchModeName(LaunchMode mode);  // "single" | "coordinator" | "env" | "mpi"
// From the environment, as above (no I/O).
LaunchMode DetectLaunchMode();

using BootstrapFactory = std::function<StatusOr<std::unique_ptr<comm::Bootstrap>>()>;

struct LaunchOptions {
  std::string backend;           // overrides comm.backend when set
  bool cuda = false;             // the model lives on a GPU (auto picks nccl)
  BootstrapFactory coordinator;  // required for LaunchMode::kCoordinator
};

// The connected ranks of this process (session.comm is null in single mode). Blocks until
// every rank joined or comm.timeout_s passed; errors name the mode and what to set.
struct Launch {
  LaunchMode mode = LaunchMode::kSingle;
  comm::CommSession session;
};
StatusOr<Launch> ConnectRanks(const JobSpec& spec, const LaunchOptions& options);

}  // namespace gantry::train
