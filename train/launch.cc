// Launch: mode detection and communicator creation over the matching bootstrap.
#include "train/launch.h"

#include <cstdlib>

#include "base/logging.h"
#include "comm/bootstrap/mpi_bootstrap.h"

namespace gantry::train {
namespace {
bool EnvSet(const char* name) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0';
}
}  // namespace

const char* LaunchModeName(LaunchMode mode) {
  switch (mode) {
    case LaunchMode::kCoordinator:
      return "coordinator";
    case LaunchMode::kEnv:
      return "env";
    case LaunchMode::kMpi:
      return "mpi";
    case LaunchMode::kSingle:
      break;
  }
  return "single";
}

LaunchMode DetectLaunchMode() {
  if (EnvSet("GANTRY_TOKEN")) return LaunchMode::kCoordinator;
  if (EnvSet("RANK") || EnvSet("JOB_COMPLETION_INDEX")) {
    const char* world = std::getenv("WORLD_SIZE");
    if (world != nullptr && std::string(world) == "1") return LaunchMode::kSingle;
    return LaunchMode::kEnv;
  }
  if (comm::RunningUnderMpirun()) return LaunchMode::kMpi;
  return LaunchMode::kSingle;
}

// A single-process launch whose environment says otherwise is a mistake to report, not to
// run: RANK=5 WORLD_SIZE=1, or WORLD_SIZE=4 without a RANK (every such process would train
// alone as rank 0 and write the same checkpoints).
Status CheckSingleEnvironment() {
  const char* world = std::getenv("WORLD_SIZE");
  const char* rank = std::getenv("RANK");
  const char* index = std::getenv("JOB_COMPLETION_INDEX");
  const char* r = rank && *rank ? rank : index;
  if (world != nullptr && std::string(world) == "1" && r != nullptr && *r &&
      std::string(r) != "0") {
    return InvalidArgumentError(std::string(rank && *rank ? "RANK" : "JOB_COMPLETION_INDEX") +
                                "=" + r + " but WORLD_SIZE=1: a rank must be below the world "
                                "size");
  }
  if (world != nullptr && *world && std::string(world) != "1" && (r == nullptr || !*r)) {
    return InvalidArgumentError(std::string("WORLD_SIZE=") + world +
                                " but neither RANK nor JOB_COMPLETION_INDEX is set: set this "
                                "process's rank (or unset WORLD_SIZE for one process)");
  }
  return OkStatus();
}

// Under mpirun, RANK/WORLD_SIZE (or JOB_COMPLETION_INDEX) left in the environment take
// precedence: when they contradict Open MPI's own numbering (RANK=0 WORLD_SIZE=1 exported in
// the shell, then mpirun -np 2) every process trained alone as rank 0 on one checkpoint
// directory. Refused, naming both.
Status CheckMpirunAgreesWithEnvironment() {
  const char* mpi_world = std::getenv("OMPI_COMM_WORLD_SIZE");
  const char* mpi_rank = std::getenv("OMPI_COMM_WORLD_RANK");
  if (EnvSet("GANTRY_TOKEN") || mpi_world == nullptr || mpi_rank == nullptr) return OkStatus();
  const char* world = std::getenv("WORLD_SIZE");
  const char* rank = EnvSet("RANK") ? "RANK" : EnvSet("JOB_COMPLETION_INDEX") ? "JOB_COMPLETION_INDEX"
                                                                              : nullptr;
  const char* hint = ": unset RANK, WORLD_SIZE and JOB_COMPLETION_INDEX under mpirun (it numbers "
                     "the ranks), or start the ranks without mpirun";
  // WORLD_SIZE alone does not win over mpirun (without a rank the launch stays in mpi mode).
  if (rank != nullptr && world != nullptr && *world && std::string(world) != mpi_world) {
    return InvalidArgumentError(std::string("WORLD_SIZE=") + world + " but mpirun started " +
                                mpi_world + " process(es) (OMPI_COMM_WORLD_SIZE=" + mpi_world +
                                ")" + hint);
  }
  if (rank != nullptr && std::string(std::getenv(rank)) != mpi_rank) {
    return InvalidArgumentError(std::string(rank) + "=" + std::getenv(rank) +
                                " but this process is mpirun's rank " + mpi_rank +
                                " (OMPI_COMM_WORLD_RANK)" + hint);
  }
  return OkStatus();
}

StatusOr<Launch> ConnectRanks(const JobSpec& spec, const LaunchOptions& options) {
  GANTRY_RETURN_IF_ERROR(CheckMpirunAgreesWithEnvironment());
  Launch launch;
  launch.mode = DetectLaunchMode();
  if (launch.mode == LaunchMode::kSingle) {
    GANTRY_RETURN_IF_ERROR(CheckSingleEnvironment());
    return launch;
  }
  comm::CommOptions co = comm::CommOptions::FromSpec(spec.comm);
  GANTRY_RETURN_IF_ERROR(co.ApplyEnv());
  if (!options.backend.empty()) co.backend = options.backend;
  co.cuda = options.cuda;
  const char* mode = LaunchModeName(launch.mode);
  StatusOr<std::unique_ptr<comm::Bootstrap>> boot = FailedPreconditionError("no bootstrap");
  if (launch.mode == LaunchMode::kCoordinator) {
    if (!options.coordinator) {
      return FailedPreconditionError(
          "GANTRY_TOKEN is set but this binary has no coordinator bootstrap; unset GANTRY_TOKEN "
          "to use RANK/WORLD_SIZE/MASTER_ADDR/MASTER_PORT");
    }
    boot = options.coordinator();
  } else {
    boot = comm::BootstrapFromEnvironment(co.timeout);
  }
  if (!boot.ok()) {
    Status s = boot.status();
    return s.Prepend(std::string("launch mode ") + mode + ": bootstrap failed");
  }
  launch.session.bootstrap = std::move(boot).value();
  auto c = comm::CreateCommunicator(co, *launch.session.bootstrap);
  if (!c.ok()) {
    Status s = c.status();
    return s.Prepend(std::string("launch mode ") + mode + ": rank " +
                     std::to_string(launch.session.bootstrap->rank()) + " of " +
                     std::to_string(launch.session.bootstrap->size()) + " could not create the '" +
                     co.backend + "' communicator");
  }
  launch.session.comm = std::move(c).value();
  GANTRY_LOG(INFO, "ranks connected")
      .Field("mode", mode)
      .Field("rank", int64_t(launch.session.comm->rank()))
      .Field("world", int64_t(launch.session.comm->size()))
      .Field("backend", std::string(launch.session.comm->backend()));
  return launch;
}

}  // namespace gantry::train
