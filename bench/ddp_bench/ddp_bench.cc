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
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <unistd.h>
#include <vector>

#include "bench/ddp_bench/runs.h"

namespace gantry::bench {
namespace {

using nlohmann::json;

constexpr double kTargetRatio = 1.5;
constexpr double kTargetExposed = 0.10;
constexpr int kRanks = 2;

struct Options {
  bool json = false, quick = false, peers = true, keep = false;
  int rounds = 3;
  std::vector<std::string> workloads = {"gpt-tiny", "mlp-mnist"};
  std::vector<std::string> backends = {"auto", "tcp"};
  RunEnv env;
};

// Medians of every case, by key ("ours-ddp-auto", "ours-indep", "ours-1", "peer-ddp-glibc"...).
using Samples = std::map<std::string, std::vector<double>>;

std::optional<double> Median(const Samples& s, const std::string& key) {
  auto it = s.find(key);
  if (it == s.end() || it->second.empty()) return std::nullopt;
  std::vector<double> v = it->second;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

void Note(const Options& o, const std::string& what, const StatusOr<Measurement>& m) {
  if (m.ok())
    std::fprintf(stderr, "ddp_bench: %-34s %12.1f items/s%s\n", what.c_str(), m->items_per_s,
                 m->backend.empty() ? "" : (" (" + m->backend + ")").c_str());
  else
    std::fprintf(stderr, "ddp_bench: %-34s FAILED: %s\n", what.c_str(),
                 m.status().ToString().c_str());
  (void)o;
}

// The allocator of the better peer so far ("tcmalloc" before any figure: the notes' winner).
std::string BetterPeer(const Samples& s) {
  auto g = Median(s, "peer-ddp-glibc"), t = Median(s, "peer-ddp-tcmalloc");
  if (g && (!t || *g > *t)) return "glibc";
  return "tcmalloc";
}

struct BackendNames {
  std::map<std::string, std::string> resolved;  // "auto" -> "shm" (what ours logged)
};

Samples Measure(const Options& o, const Workload& w, BackendNames* names) {
  Samples s;
  int run = 0;
  auto record = [&](const std::string& key, const std::string& what,
                    const StatusOr<Measurement>& m) {
    Note(o, w.name + " " + what, m);
    if (m.ok()) s[key].push_back(m->items_per_s);
  };
  for (int round = 0; round < o.rounds; ++round) {
    std::fprintf(stderr, "ddp_bench: %s round %d/%d\n", w.name.c_str(), round + 1, o.rounds);
    for (const auto& b : o.backends) {
      auto m = RunOurs(o.env, w, OursMode::kDdp, kRanks, b, run++);
      record("ours-ddp-" + b, "ours 2 ranks " + b, m);
      if (m.ok() && !m->backend.empty()) names->resolved[b] = m->backend;
      if (m.ok() && m->engine_comm_wait_share >= 0)
        s["engine-comm-" + b].push_back(m->engine_comm_wait_share);
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

std::string Fmt(std::optional<double> v, const char* f = "%.0f") {
  if (!v) return "-";
  char buf[64];
  std::snprintf(buf, sizeof(buf), f, *v);
  return buf;
}
std::string Pct(std::optional<double> v) {
  return v ? Fmt(*v * 100, "%.1f%%") : "-";
}

json Row(const Workload& w, const std::string& metric, std::optional<double> ours) {
  json r = {{"bench", "ddp"}, {"workload", w.name}, {"metric", metric}};
  r["ours"] = ours ? json(*ours) : json(nullptr);
  return r;
}

// Builds the rows of one workload (JSON) and prints them as a table unless --json.
void Report(const Options& o, const Workload& w, const Samples& s, const BackendNames& names) {
  const std::string a = BetterPeer(s);
  const std::string peer = "pytorch-ddp-" + a;
  const auto peer_ddp = Median(s, "peer-ddp-" + a);
  const auto peer_nosync = Median(s, "peer-nosync-" + a);
  const auto peer_single = Median(s, "peer-single-" + a);
  const auto ours_indep = Median(s, "ours-indep");
  const auto ours_1 = Median(s, "ours-1");
  auto div = [](std::optional<double> x, std::optional<double> y) -> std::optional<double> {
    if (!x || !y || *y <= 0) return std::nullopt;
    return *x / *y;
  };
  auto scaling = [&](std::optional<double> two, std::optional<double> one) {
    return one ? div(two, *one * kRanks) : std::nullopt;
  };
  auto exposed = [&](std::optional<double> ddp, std::optional<double> nocomm) {
    auto r = div(ddp, nocomm);
    return r ? std::optional<double>(1.0 - *r) : std::nullopt;
  };
  std::vector<json> rows;
  std::vector<std::vector<std::string>> table;
  const std::string unit = w.metric == "tokens_per_s" ? "tokens/s" : "samples/s";
  for (const auto& b : o.backends) {
    const auto ours = Median(s, "ours-ddp-" + b);
    const std::string shown =
        b + (names.resolved.count(b) && names.resolved.at(b) != b ? " (" + names.resolved.at(b) + ")"
                                                                  : "");
    json r = Row(w, w.metric, ours);
    r["backend"] = b;
    if (names.resolved.count(b)) r["backend_used"] = names.resolved.at(b);
    r["ranks"] = kRanks;
    if (peer_ddp) r.update({{"peer", peer}, {"peer_value", *peer_ddp}});
    if (auto x = div(ours, peer_ddp)) r["ratio"] = *x;
    r["target"] = kTargetRatio;
    for (const char* alloc : {"glibc", "tcmalloc"})
      if (auto v = Median(s, std::string("peer-ddp-") + alloc))
        r[std::string("peer_") + alloc] = *v;
    rows.push_back(r);
    table.push_back({"2 ranks, " + shown, Fmt(ours), Fmt(peer_ddp) + " " + peer,
                     Fmt(div(ours, peer_ddp), "%.2f"), ">= 1.5"});
    json sc = Row(w, "scaling_efficiency", scaling(ours, ours_1));
    sc["backend"] = b;
    if (auto p = scaling(peer_ddp, peer_single)) sc.update({{"peer", peer}, {"peer_value", *p}});
    if (auto x = div(scaling(ours, ours_1), scaling(peer_ddp, peer_single))) sc["ratio"] = *x;
    rows.push_back(sc);
    table.push_back({"  scaling 1 -> 2 ranks", Pct(scaling(ours, ours_1)),
                     Pct(scaling(peer_ddp, peer_single)), "", ""});
    json ex = Row(w, "exposed_comm_share", exposed(ours, ours_indep));
    ex["backend"] = b;
    if (auto p = exposed(peer_ddp, peer_nosync)) ex.update({{"peer", peer}, {"peer_value", *p}});
    ex["target"] = kTargetExposed;
    const auto engine = Median(s, "engine-comm-" + b);
    if (engine) ex["engine_comm_wait_share"] = *engine;
    rows.push_back(ex);
    table.push_back({"  exposed comm (vs no-comm run)", Pct(exposed(ours, ours_indep)),
                     Pct(exposed(peer_ddp, peer_nosync)) + " (vs no_sync)", "", "< 10%"});
    table.push_back({"  comm wait / step (engine log)", Pct(engine), "", "", "< 10%"});
  }
  json one = Row(w, w.metric, ours_1);
  one["ranks"] = 1;
  if (peer_single)
    one.update({{"peer", "pytorch-" + a}, {"peer_value", *peer_single}});
  if (auto x = div(ours_1, peer_single)) one["ratio"] = *x;
  rows.push_back(one);
  table.push_back({"1 rank", Fmt(ours_1), Fmt(peer_single) + " pytorch-" + a,
                   Fmt(div(ours_1, peer_single), "%.2f"), ""});
  table.push_back({"2 x 1 rank, no comm", Fmt(ours_indep), Fmt(peer_nosync) + " ddp no_sync",
                   "", ""});
  if (o.json) {
    for (const auto& r : rows) std::printf("%s\n", r.dump().c_str());
    return;
  }
  std::printf("\n%s, %s (2 ranks x 1 thread on this host, batch %d/rank, median of %d)\n",
              w.name.c_str(), unit.c_str(), w.batch, o.rounds);
  std::printf("  %-32s %12s  %-34s %6s  %s\n", "case", "ours", "peer", "ratio", "target");
  for (const auto& t : table)
    std::printf("  %-32s %12s  %-34s %6s  %s\n", t[0].c_str(), t[1].c_str(), t[2].c_str(),
                t[3].c_str(), t[4].c_str());
  std::printf("  peer candidates: pytorch-ddp glibc %s, tcmalloc %s\n",
              Fmt(Median(s, "peer-ddp-glibc")).c_str(), Fmt(Median(s, "peer-ddp-tcmalloc")).c_str());
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
  o.quick = o.quick;
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
    Report(o, *w, s, names);
  }
  if (temp_dir && !o.keep && rc == 0) std::filesystem::remove_all(work_dir);
  else std::fprintf(stderr, "ddp_bench: run directories kept in %s\n", work_dir.c_str());
  return rc;
}

}  // namespace
}  // namespace gantry::bench

int main(int argc, char** argv) { return gantry::bench::Main(argc, argv); }
