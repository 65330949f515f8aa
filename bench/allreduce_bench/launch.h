// Launch: runs one implementation of the allreduce benchmark as real processes (N rank
// processes, or one mpirun) and collects rank 0's "RESULT <bytes> <seconds>" lines. Never
// hangs: each child leads its own process group; when a child fails the rest are stopped
// after a short grace, and everything is stopped at the deadline. A failure becomes `error`.
#pragma once

#include <cstddef>
#include <map>
#include <string>
#include <vector>

namespace gantry::bench {

struct Impl {
  std::string name;     // column name
  std::string peer_id;  // id in --json rows
  std::vector<std::string> argv;
  std::map<std::string, std::string> env;
  // Pin rank r to CPU r mod #CPUs, as mpirun binds its ranks by default (--bind-to core):
  // unbound ranks that the scheduler stacks on one core wait for each other in turns.
  bool pin = false;
};

struct LaunchResult {
  std::map<size_t, double> seconds;  // bytes -> seconds per op (rank 0's figures)
  std::string error;                 // empty when every process exited 0 in time
  double wall_s = 0;
};

// `procs` processes of impl.argv with torchrun-style env (RANK, WORLD_SIZE, MASTER_ADDR,
// MASTER_PORT=port) plus impl.env; `timeout_s` bounds the whole launch.
LaunchResult Launch(const Impl& impl, int procs, int world, int port, double timeout_s);

}  // namespace gantry::bench
