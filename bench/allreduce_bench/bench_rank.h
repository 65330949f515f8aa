// One rank of an allreduce benchmark run: the same timing loop over every size for each
// implementation (ours over the Communicator interface, Open MPI's MPI_Allreduce, Gloo's
// chunked ring). Rank 0 prints "RESULT <bytes> <seconds per op>" lines for the driver.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

namespace gantry::bench {

// Message sizes in bytes: 4 KiB, 16 KiB, ... up to max_bytes (x4 steps).
std::vector<size_t> BenchSizes(size_t min_bytes, size_t max_bytes);
// Iterations per timed repetition at `bytes` (more for small messages).
int ItersFor(size_t bytes);

// Rank entry points (return the process exit code).
// in_place: one buffer for send and receive (as data-parallel training calls allreduce).
int RunOursRank(const std::vector<size_t>& sizes, bool in_place);   // env: RANK, WORLD_SIZE, MASTER_*, GANTRY_COMM_BACKEND
int RunGlooRank(const std::vector<size_t>& sizes);   // env: RANK, WORLD_SIZE, GANTRY_BENCH_GLOO_DIR
int RunMpiRank(const std::vector<size_t>& sizes, bool in_place);    // under mpirun

}  // namespace gantry::bench
