// ddp_bench: data-parallel training of gpt-tiny and mlp-mnist with 2 ranks on this host (one
// thread each): ours (`gantry train` x 2 in env mode, per comm backend) against PyTorch 1.13
// DistributedDataParallel (gloo; glibc malloc and tcmalloc preloaded, the better one is the
// peer), interleaved round by round in the same invocation; figures are medians over rounds.
// Also: 1-rank throughput (scaling efficiency = 2-rank / (2 x 1-rank)) and the exposed
// communication share = 1 - (2-rank DDP throughput) / (2 ranks computing without comm: ours as
// two independent trainers, the peer inside no_sync()). Table, or --json rows
// (../shared/notes/workloads.md).
#include <CLI/CLI.hpp>
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <fstream>
#include <optional>
#include <string>
#include <unistd.h>
#include <vector>

#include "bench/ddp_bench/report.h"
#include "bench/ddp_bench/runs.h"

namespace gantry::bench {
namespace {

constexpr int kRanks = 2;

struct Options {
  bool json = false, quick = false, peers = true, keep = false;
  int rounds = 3;
  std::vector<std::string> workloads = {"gpt-tiny", "mlp-mnist"};
  std::vector<std::string> backends = {"auto", "tcp"};
  RunEnv env;
};

void Note(const std::string& what, const StatusOr<Measurement>& m) {
  if (m.ok())
    std::fprintf(stderr, "ddp_bench: %-34s %12.1f items/s%s\n", what.c_str(), m->items_per_s,
                 m->backend.empty() ? "" : (" (" + m->backend + ")").c_str());
  else
    std::fprintf(stderr, "ddp_bench: %-34s FAILED: %s\n", what.c_str(),
                 m.status().ToString().c_str());
}

// /proc/loadavg's 1-minute figure: the machine is shared, and its load explains the noise.
std::string LoadAverage() {
  std::ifstream in("/proc/loadavg");
  std::string one;
  in >> one;
  return one.empty() ? "?" : one;
}

struct BackendNames {
  std::map<std::string, std::string> resolved;  // "auto" -> "shm" (what ours logged)
};

Samples Measure(const Options& o, const Workload& w, BackendNames* names) {
  Samples s;
  int run = 0;
  int round = 0;
  // Sample i of every case is round i (NaN when that run failed or did not run), so the
  // report can pair figures measured minutes apart under the same background load.
  auto put = [&](const std::string& key, double v) {
    auto& vec = s[key];
    vec.resize(size_t(round), std::nan(""));
    vec.push_back(v);
  };
  auto record = [&](const std::string& key, const std::string& what,
                    const StatusOr<Measurement>& m) {
    Note(w.name + " " + what, m);
    put(key, m.ok() ? m->items_per_s : std::nan(""));
  };
  for (; round < o.rounds; ++round) {
    std::fprintf(stderr, "ddp_bench: %s round %d/%d\n", w.name.c_str(), round + 1, o.rounds);
    for (const auto& b : o.backends) {
      auto m = RunOurs(o.env, w, OursMode::kDdp, kRanks, b, run++);
      record("ours-ddp-" + b, "ours 2 ranks " + b, m);
      if (m.ok() && !m->backend.empty()) names->resolved[b] = m->backend;
      if (m.ok() && m->engine_comm_wait_share >= 0)
        put("engine-comm-" + b, m->engine_comm_wait_share);
    }
    if (o.peers) {
      for (bool tc : {false, true}) {
        const std::string a = tc ? "tcmalloc" : "glibc";
        record("peer-ddp-" + a, "pytorch ddp " + a,
               RunPeer(o.env, w, PeerMode::kDdp, kRanks, tc, run++));
      }
    }
    record("ours-indep", "ours 2 x 1 rank, no comm",
           RunOurs(o.env, w, OursMode::kIndependent, kRanks, "auto", run++));
    record("ours-1", "ours 1 rank", RunOurs(o.env, w, OursMode::kIndependent, 1, "auto", run++));
    if (o.peers) {
      const std::string a = BetterPeer(s);
      const bool tc = a == "tcmalloc";
      record("peer-nosync-" + a, "pytorch ddp no_sync " + a,
             RunPeer(o.env, w, PeerMode::kNoSync, kRanks, tc, run++));
      record("peer-single-" + a, "pytorch 1 rank " + a,
             RunPeer(o.env, w, PeerMode::kSingle, 1, tc, run++));
    }
  }
  return s;
}

std::vector<std::string> SplitCsv(const std::string& s) {
  std::vector<std::string> out;
  size_t p = 0;
  while (p <= s.size()) {
    size_t q = s.find(',', p);
    if (q == std::string::npos) q = s.size();
    if (q > p) out.push_back(s.substr(p, q - p));
    p = q + 1;
  }
  return out;
}

int Main(int argc, char** argv) {
  Options o;
  o.env.gantry = DDP_BENCH_GANTRY;
  o.env.python = "/usr/bin/python3";
  o.env.peer_script = DDP_BENCH_PEER_SCRIPT;
  o.env.tcmalloc = "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4";
  std::string workloads = "gpt-tiny,mlp-mnist", backends = "auto,tcp", work_dir;
  int rounds = -1, timeout_s = 600;
  CLI::App app{"ddp_bench: 2-rank data-parallel training, ours vs PyTorch DDP (gloo)"};
  app.add_flag("--json", o.json, "one JSON row per line instead of the table");
  app.add_flag("--quick", o.quick, "1 round, fewer steps (a smoke run; noisy)");
  app.add_option("--rounds", rounds, "rounds (interleaved runs of every case; default 3)");
  app.add_option("--workloads", workloads, "comma list: gpt-tiny,mlp-mnist");
  app.add_option("--backends", backends, "comma list of our comm backends: auto,tcp,shm");
  app.add_option("--gantry", o.env.gantry, "gantry binary")->capture_default_str();
  app.add_option("--python", o.env.python, "python with torch (Debian's)")->capture_default_str();
  app.add_option("--work-dir", work_dir, "run directories and logs (default: a temp dir)");
  app.add_option("--timeout-s", timeout_s, "deadline of one run")->capture_default_str();
  app.add_flag("--keep", o.keep, "keep the run directories (logs) afterwards");
  bool no_peer = false;
  app.add_flag("--no-peer", no_peer, "skip PyTorch (ours only)");
  CLI11_PARSE(app, argc, argv);
  o.peers = !no_peer;
  o.rounds = rounds > 0 ? rounds : (o.quick ? 1 : 3);
  o.workloads = SplitCsv(workloads);
  o.backends = SplitCsv(backends);
  o.env.timeout = std::chrono::seconds(timeout_s);
  if (!std::filesystem::exists(o.env.gantry)) {
    std::fprintf(stderr, "ddp_bench: gantry binary %s not found; build target `gantry` or pass "
                         "--gantry PATH\n", o.env.gantry.c_str());
    return 2;
  }
  if (o.peers && !std::filesystem::exists(o.env.python)) {
    std::fprintf(stderr, "ddp_bench: %s not found (Debian python3-torch); or pass --no-peer\n",
                 o.env.python.c_str());
    return 2;
  }
  const bool temp_dir = work_dir.empty();
  if (temp_dir)
    work_dir = (std::filesystem::temp_directory_path() /
                ("gantry-ddp-bench-" + std::to_string(::getpid()))).string();
  std::filesystem::create_directories(work_dir);
  o.env.work_dir = work_dir;
  int rc = 0;
  const std::string load_start = LoadAverage();
  for (const auto& name : o.workloads) {
    auto w = MakeWorkload(name, o.quick);
    if (!w.ok()) {
      std::fprintf(stderr, "ddp_bench: %s\n", w.status().ToString().c_str());
      return 2;
    }
    BackendNames names;
    const Samples s = Measure(o, *w, &names);
    for (const auto& b : o.backends)
      if (!Median(s, "ours-ddp-" + b)) rc = 1;  // a case of ours that never ran is a failure
    ReportInput in;
    in.workload = &*w;
    in.samples = &s;
    in.backends = o.backends;
    in.resolved = names.resolved;
    in.ranks = kRanks;
    in.rounds = o.rounds;
    PrintReport(in, o.json);
  }
  if (!o.json)
    std::printf("\nhost load average (1 min) at start %s, at end %s (2 cores; other load skews "
                "every figure)\n", load_start.c_str(), LoadAverage().c_str());
  if (temp_dir && !o.keep && rc == 0) std::filesystem::remove_all(work_dir);
  else std::fprintf(stderr, "ddp_bench: run directories kept in %s\n", work_dir.c_str());
  return rc;
}

}  // namespace
}  // namespace gantry::bench

int main(int argc, char** argv) { return gantry::bench::Main(argc, argv); }
