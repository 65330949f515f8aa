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

StatusOr<Launch> ConnectRanks(const JobSpec& spec, const LaunchOptions& options) {
  Launch launch;
  launch.mode = DetectLaunchMode();
  if (launch.mode == LaunchMode::kSingle) return launch;
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
