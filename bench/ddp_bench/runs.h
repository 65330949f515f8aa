// One measured run of bench/ddp_bench: ours (`gantry train` processes launched in env mode on
// 127.0.0.1, throughput read from their JSON step logs after warm-up) or the PyTorch DDP peer
// (ddp_peer.py under /usr/bin/python3, optionally with tcmalloc preloaded). Each run starts
// fresh processes in its own directory and ends them by PID; a run that fails or overruns its
// deadline is an error naming the log file to read.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

#include "base/status.h"

namespace gantry::bench {

struct Workload {
  std::string name;       // gpt-tiny | mlp-mnist
  std::string metric;     // tokens_per_s | samples_per_s
  std::string spec_body;  // model/data/optimizer lines of the job YAML
  int batch = 0;          // per rank
  int64_t items_per_rank_step = 0;
  int warmup = 0;  // steps excluded from the timing
  int steps = 0;   // steps timed
};

// kInvalidArgument for an unknown name. `quick` shortens warm-up and timed steps.
StatusOr<Workload> MakeWorkload(const std::string& name, bool quick);

struct RunEnv {
  std::string gantry;       // the gantry binary
  std::string python;       // /usr/bin/python3 (Debian's torch)
  std::string peer_script;  // ddp_peer.py
  std::string tcmalloc;     // preloaded for the tcmalloc peer
  std::string work_dir;     // one subdirectory per run
  std::chrono::seconds timeout{600};
};

struct Measurement {
  double items_per_s = 0;  // all ranks together
  std::string backend;     // comm backend ours reported using ("" when not logged)
  // Share of the step the engine itself reports waiting for communication (median over
  // logged steps; -1 when its logs carry no such timing).
  double engine_comm_wait_share = -1;
};

enum class OursMode {
  kDdp,          // `ranks` ranks of one data-parallel job (env mode, backend as given)
  kIndependent,  // `ranks` independent 1-rank trainers at once: the same compute, no comm
};
StatusOr<Measurement> RunOurs(const RunEnv& env, const Workload& w, OursMode mode, int ranks,
                              const std::string& backend, int run_id);

enum class PeerMode { kDdp, kNoSync, kSingle };
const char* PeerModeName(PeerMode mode);  // ddp | nosync | single
StatusOr<Measurement> RunPeer(const RunEnv& env, const Workload& w, PeerMode mode, int ranks,
                              bool tcmalloc, int run_id);

}  // namespace gantry::bench
