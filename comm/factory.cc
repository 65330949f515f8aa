// Backend selection and construction.
#include "comm/factory.h"

#include <set>

#include "comm/hierarchical/hierarchical_communicator.h"
#include "comm/shm/shm_communicator.h"
#include "comm/tcp/tcp_communicator.h"
#if GANTRY_COMM_WITH_MPI
#include "comm/mpi/mpi_communicator.h"
#endif
#if GANTRY_COMM_WITH_NCCL
#include "comm/nccl/nccl_communicator.h"
#endif

namespace gantry::comm {

StatusOr<std::string> ResolveBackend(const CommOptions& options, Bootstrap& bootstrap) {
  if (options.backend != "auto") return options.backend;
  if (options.cuda) return std::string("nccl");
  if (bootstrap.size() == 1) return std::string("shm");
  auto scope = bootstrap.NewScope("auto");
  GANTRY_ASSIGN_OR_RETURN(auto hosts,
                          bootstrap.AllGather(*scope, "host", Bootstrap::HostId(), options.timeout));
  std::set<std::string> distinct(hosts.begin(), hosts.end());
  if (distinct.size() == 1) return std::string("shm");
  if (distinct.size() == hosts.size()) return std::string("tcp");
  return std::string("hier");
}

StatusOr<std::unique_ptr<Communicator>> CreateCommunicator(const CommOptions& options,
                                                           Bootstrap& bootstrap) {
  GANTRY_RETURN_IF_ERROR(options.Validate());
  // Before anything backend-specific: ranks that chose different backends would wait in
  // different bootstrap scopes until the timeout, each blaming the other for not publishing.
  GANTRY_RETURN_IF_ERROR(bootstrap.AgreeOn(
      "comm", {{"comm backend (comm.backend, --comm-backend, GANTRY_COMM_BACKEND)",
                options.backend},
               {"buffer device (--device; CUDA buffers use nccl)",
                options.cuda ? "cuda" : "host"}},
      options.timeout));
  GANTRY_ASSIGN_OR_RETURN(std::string backend, ResolveBackend(options, bootstrap));
  if (backend == "tcp") {
    GANTRY_ASSIGN_OR_RETURN(auto c, TcpCommunicator::Create(bootstrap, options));
    return std::unique_ptr<Communicator>(std::move(c));
  }
  if (backend == "shm") {
    GANTRY_ASSIGN_OR_RETURN(auto c, ShmCommunicator::Create(bootstrap, options));
    return std::unique_ptr<Communicator>(std::move(c));
  }
  if (backend == "hier") {
    GANTRY_ASSIGN_OR_RETURN(auto c, HierarchicalCommunicator::Create(bootstrap, options));
    return std::unique_ptr<Communicator>(std::move(c));
  }
  if (backend == "mpi") {
#if GANTRY_COMM_WITH_MPI
    GANTRY_ASSIGN_OR_RETURN(auto c, MpiCommunicator::Create(options));
    return std::unique_ptr<Communicator>(std::move(c));
#else
    return UnimplementedError("comm backend 'mpi': this build has no MPI (install libopenmpi-dev "
                              "and rebuild), or choose tcp/shm/auto");
#endif
  }
  if (backend == "nccl") {
#if GANTRY_COMM_WITH_NCCL
    GANTRY_ASSIGN_OR_RETURN(auto c, NcclCommunicator::Create(bootstrap, options));
    return std::unique_ptr<Communicator>(std::move(c));
#else
    return UnimplementedError("comm backend 'nccl': this build has no CUDA/NCCL; build on a host "
                              "with /usr/local/cuda and NCCL, or choose tcp/shm/auto");
#endif
  }
  return InvalidArgumentError("comm backend '" + backend + "' is unknown");
}

StatusOr<CommSession> CreateCommunicatorFromEnvironment(CommOptions options) {
  GANTRY_RETURN_IF_ERROR(options.ApplyEnv());
  CommSession session;
  GANTRY_ASSIGN_OR_RETURN(session.bootstrap, BootstrapFromEnvironment(options.timeout));
  GANTRY_ASSIGN_OR_RETURN(session.comm, CreateCommunicator(options, *session.bootstrap));
  return session;
}

}  // namespace gantry::comm
