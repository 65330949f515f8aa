// MPI bootstrap: under mpirun, rank and size come from MPI_COMM_WORLD and rank 0 hosts a
// TcpStoreServer on an ephemeral port whose candidate addresses it broadcasts with MPI_Bcast;
// every rank then uses that TCP store like the env bootstrap does.
// Without MPI in the build, BootstrapFromMpi returns kUnimplemented.
#pragma once

#include <chrono>
#include <functional>
#include <string>
#include <memory>

#include "comm/bootstrap/bootstrap.h"

namespace gantry::comm {

// True when launched by mpirun/srun with PMI(x) (OMPI_COMM_WORLD_SIZE, PMI_SIZE, PMIX_RANK).
bool RunningUnderMpirun();
// MPI_Init_thread(MPI_THREAD_MULTIPLE) once per process unless MPI is already initialised;
// MPI_Finalize runs at exit when Gantry initialised it, unless MarkMpiFailed was called.
Status EnsureMpiInitialized();
// Records that an MPI operation timed out or was aborted. MPI_Finalize is then skipped at exit:
// it waits for every rank, so a stalled peer would hang this one forever. Leaving without
// finalizing makes mpirun end the whole job instead (it kills the other ranks and says why).
void MarkMpiFailed();
// Polls `test` (an MPI_Test on a nonblocking request; it sets *flag when done and returns the
// MPI error code) until it completes or `timeout` passes. A timeout abandons the request, marks
// MPI failed and returns DeadlineExceeded naming `what`.
Status WaitMpi(const std::function<int(int* flag)>& test, std::chrono::milliseconds timeout,
               const std::string& what);
StatusOr<std::unique_ptr<Bootstrap>> BootstrapFromMpi(std::chrono::milliseconds timeout);

}  // namespace gantry::comm
