// Creating communicators: pick the backend from CommOptions (or "auto") and build it over a
// Bootstrap. This is what train/ and serve/ call; see comm/communicator.h for the contract.
//   auto = nccl when options.cuda; otherwise shm when all ranks share a host, tcp when every
//          rank is on its own host, and hierarchical (shm inside hosts + tcp ring between
//          hosts) in between.
#pragma once

#include <memory>
#include <string>

#include "comm/bootstrap/bootstrap.h"
#include "comm/communicator.h"
#include "comm/options.h"

namespace gantry::comm {

// Collective: every rank of `bootstrap` calls it with the same options. The bootstrap must
// outlive the communicator (its store may host rank 0's TCP store server).
StatusOr<std::unique_ptr<Communicator>> CreateCommunicator(const CommOptions& options,
                                                           Bootstrap& bootstrap);

// The backend "auto" resolves to for this job (collective: exchanges host ids).
StatusOr<std::string> ResolveBackend(const CommOptions& options, Bootstrap& bootstrap);

// A communicator with the bootstrap it came from (destroyed in the right order).
struct CommSession {
  std::unique_ptr<Bootstrap> bootstrap;
  std::unique_ptr<Communicator> comm;
};
// BootstrapFromEnvironment (RANK/WORLD_SIZE/MASTER_ADDR/MASTER_PORT, or mpirun, or a single
// rank) + CreateCommunicator; options get GANTRY_COMM_* overrides applied first.
StatusOr<CommSession> CreateCommunicatorFromEnvironment(CommOptions options);

}  // namespace gantry::comm
