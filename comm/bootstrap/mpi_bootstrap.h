// MPI bootstrap: under mpirun, rank and size come from MPI_COMM_WORLD and rank 0 hosts a
// TcpStoreServer on an ephemeral port whose candidate addresses it broadcasts with MPI_Bcast;
// every rank then uses that TCP store like the env bootstrap does.
// Without MPI in the build, BootstrapFromMpi returns kUnimplemented.
#pragma once

#include <chrono>
#include <memory>

#include "comm/bootstrap/bootstrap.h"

namespace gantry::comm {

// True when launched by mpirun/srun with PMI(x) (OMPI_COMM_WORLD_SIZE, PMI_SIZE, PMIX_RANK).
bool RunningUnderMpirun();
// MPI_Init_thread(MPI_THREAD_MULTIPLE) once per process unless MPI is already initialised;
// MPI_Finalize runs at exit when Gantry initialised it.
Status EnsureMpiInitialized();
StatusOr<std::unique_ptr<Bootstrap>> BootstrapFromMpi(std::chrono::milliseconds timeout);

}  // namespace gantry::comm
