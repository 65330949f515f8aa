// allreduce_bench: nccl-tests-style table (size, time, algbw, busbw) for 2 ranks on this host:
// our tcp and shm backends, Open MPI's MPI_Allreduce over shared memory and over TCP (at its
// best setting: glibc keeps big blocks, MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=64 GiB),
// Gloo's chunked ring, plus the single-thread memcpy and loopback TCP (one-way and duplex)
// stream ceilings.  allreduce_bench [--json] [--ranks N] [--max-mib M] [--rounds R]
//                   [--launch-timeout-s S] [--no-pin] [--out-of-place]
//                   [--only tcp,shm,mpi-shm,mpi-tcp,gloo,shm-sym]
// Every library reduces in place by default, as data-parallel training calls it (DDP, Horovod,
// our engine; Gloo's allreduce has no other form; MPI gets MPI_IN_PLACE); --out-of-place gives
// ours and MPI separate send and receive buffers (Gloo stays in place).
// Each implementation runs as N processes launched here, round-robin with the others for R
// rounds (default 3); each figure is the median over rounds of in-process medians. A launch
// that fails or passes its deadline is stopped and reported as FAILED (never a hang).
#include <unistd.h>

#include <chrono>
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "bench/allreduce_bench/bench_rank.h"
#include "bench/allreduce_bench/ceilings.h"
#include "bench/allreduce_bench/launch.h"

namespace gantry::bench {
namespace {

std::string SizeName(size_t b) {
  if (b >= (1u << 20)) return std::to_string(b >> 20) + " MiB";
  return std::to_string(b >> 10) + " KiB";
}

void JsonRow(const std::string& workload, const std::string& metric, double ours,
             const std::string& peer, double peer_value, bool higher_better, double target) {
  std::printf("{\"bench\": \"allreduce\", \"workload\": \"%s\", \"metric\": \"%s\", \"ours\": %.6g",
              workload.c_str(), metric.c_str(), ours);
  if (!peer.empty() && peer_value > 0) {
    double ratio = higher_better ? ours / peer_value : peer_value / ours;
    std::printf(", \"peer\": \"%s\", \"peer_value\": %.6g, \"ratio\": %.3f", peer.c_str(),
                peer_value, ratio);
  }
  std::printf(", \"target\": %.6g}\n", target);
}

}  // namespace
}  // namespace gantry::bench

int main(int argc, char** argv) {
  using namespace gantry::bench;
  bool json = false, pin = true, out_of_place = false;
  int ranks = 2, rounds = 3;
  double launch_timeout_s = 240;
  size_t max_bytes = 256u << 20;
  std::string only = "tcp,shm,mpi-shm,mpi-tcp,gloo,shm-sym", rank_of;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--json") json = true;
    else if (a == "--ranks" && i + 1 < argc) ranks = std::atoi(argv[++i]);
    else if (a == "--max-mib" && i + 1 < argc) max_bytes = std::strtoull(argv[++i], nullptr, 10) << 20;
    else if (a == "--only" && i + 1 < argc) only = argv[++i];
    else if (a == "--rounds" && i + 1 < argc) rounds = std::max(1, std::atoi(argv[++i]));
    else if (a == "--no-pin") pin = false;
    else if (a == "--out-of-place") out_of_place = true;
    else if (a == "--launch-timeout-s" && i + 1 < argc) launch_timeout_s = std::atof(argv[++i]);
    else if (a.rfind("--rank-of=", 0) == 0) rank_of = a.substr(10);
    else {
      std::fprintf(stderr, "usage: %s [--json] [--ranks N] [--max-mib M] [--rounds R] "
                   "[--launch-timeout-s S] [--no-pin] [--out-of-place] "
                   "[--only tcp,shm,mpi-shm,mpi-tcp,gloo,shm-sym]\n", argv[0]);
      return 2;
    }
  }
  const auto sizes = BenchSizes(4096, max_bytes);
  if (rank_of == "ours") return RunOursRank(sizes, !out_of_place);
  if (rank_of == "gloo") return RunGlooRank(sizes);
  if (rank_of == "mpi") return RunMpiRank(sizes, !out_of_place);
  if (ranks < 2) {
    std::fprintf(stderr, "--ranks must be >= 2\n");
    return 2;
  }

  char self[4096] = {0};
  if (readlink("/proc/self/exe", self, sizeof(self) - 1) <= 0) return 1;
  const std::string max_mib = std::to_string(max_bytes >> 20), n = std::to_string(ranks);
  char gloo_dir[] = "/tmp/gantry-gloo-XXXXXX";
  if (!mkdtemp(gloo_dir)) {
    std::perror("mkdtemp /tmp/gantry-gloo-XXXXXX");
    return 1;
  }
  // The ranks' own flags: --out-of-place travels to ours and MPI.
  auto rank_args = [&](const char* who) {
    std::vector<std::string> a = {self, std::string("--rank-of=") + who, "--max-mib", max_mib};
    if (out_of_place) a.push_back("--out-of-place");
    return a;
  };
  auto mpirun = [&](const std::string& btl) {
    std::vector<std::string> a = {"mpirun", "-np", n, "--allow-run-as-root", "--oversubscribe",
                                  "--mca", "pml", "ob1", "--mca", "btl", btl,
                                  "--mca", "btl_tcp_if_include", "lo",
                                  "-x", "MALLOC_MMAP_MAX_=0", "-x",
                                  "MALLOC_TRIM_THRESHOLD_=68719476736"};
    for (std::string& x : rank_args("mpi")) a.push_back(std::move(x));
    return a;
  };
  const std::map<std::string, std::string> ours_env = {{"GANTRY_COMM_TIMEOUT_S", "60"}};
  auto with = [&](std::map<std::string, std::string> e, const char* k, const char* v) {
    e[k] = v;
    return e;
  };
  // Every implementation runs one rank per core: mpirun binds by default, the others are
  // pinned the same way by Launch (--no-pin leaves ours and Gloo's ranks unbound).
  std::vector<Impl> impls = {
      {"ours tcp", "gantry-tcp", rank_args("ours"), with(ours_env, "GANTRY_COMM_BACKEND", "tcp"), pin},
      {"ours shm", "gantry-shm", rank_args("ours"), with(ours_env, "GANTRY_COMM_BACKEND", "shm"), pin},
      {"ompi shm", "openmpi-shm-kept", mpirun("self,vader"), {}},
      {"ompi tcp", "openmpi-tcp-kept", mpirun("self,tcp"), {}},
      {"gloo", "gloo-tcp-ring-chunked", rank_args("gloo"), {{"GANTRY_BENCH_GLOO_DIR", gloo_dir}}, pin},
      {"ours shm-sym", "gantry-shm-symmetric", rank_args("ours"), with(with(ours_env, "GANTRY_COMM_BACKEND", "shm"), "GANTRY_BENCH_SYMMETRIC", "1"), pin},
  };
  const char* keys[] = {"tcp", "shm", "mpi-shm", "mpi-tcp", "gloo", "shm-sym"};
  std::vector<std::map<size_t, std::vector<double>>> runs(impls.size());
  std::vector<std::string> errors(impls.size());
  std::vector<double> streams, duplexes;
  int port = 29500 + getpid() % 10000;
  const auto bench_start = std::chrono::steady_clock::now();
  for (int round = 0; round < rounds; ++round) {
    for (size_t i = 0; i < impls.size(); ++i) {
      if (("," + only + ",").find(std::string(",") + keys[i] + ",") == std::string::npos) continue;
      // Gloo's FileStore refuses existing keys: give every launch a fresh directory.
      std::filesystem::remove_all(gloo_dir);
      std::filesystem::create_directory(gloo_dir);
      const bool mpi = impls[i].argv[0] == "mpirun";
      LaunchResult r = Launch(impls[i], mpi ? 1 : ranks, ranks, port++, launch_timeout_s);
      std::fprintf(stderr, "round %d: %-9s %5.1f s%s\n", round + 1, impls[i].name.c_str(),
                   r.wall_s, r.error.empty() ? "" : " FAILED");
      if (!r.error.empty() && errors[i].empty()) errors[i] = "round " + std::to_string(round + 1) + ": " + r.error;
      for (auto& [bytes, s] : r.seconds) runs[i][bytes].push_back(s);
    }
    streams.push_back(LoopbackTcpStreamGBps());
    duplexes.push_back(DuplexTcpStreamGBps());
  }
  std::filesystem::remove_all(gloo_dir);
  const double total_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - bench_start).count();
  auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v.empty() ? 0.0 : v[v.size() / 2];
  };
  std::vector<std::map<size_t, double>> res(impls.size());
  for (size_t i = 0; i < impls.size(); ++i) {
    for (auto& [bytes, v] : runs[i]) res[i][bytes] = median(v);
  }
  const double stream = median(streams), duplex = median(duplexes);
  const double bus = 2.0 * (ranks - 1) / ranks;
  auto busbw = [&](size_t i, size_t bytes) {
    auto it = res[i].find(bytes);
    return it == res[i].end() ? 0.0 : bytes / it->second / 1e9 * bus;
  };
  std::vector<double> memcpy_gbps;
  for (size_t b : sizes) memcpy_gbps.push_back(MemcpyGBps(b));

  if (!json) {
    std::printf("allreduce f32 sum, %d ranks on this host; time per op; algbw = size/time, "
                "busbw = algbw*2(n-1)/n, in GB/s\n", ranks);
    std::printf("%-8s", "size");
    for (auto& im : impls) std::printf(" | %-10s %6s %6s", im.name.c_str(), "algbw", "busbw");
    std::printf(" | memcpy GB/s\n");
    for (size_t k = 0; k < sizes.size(); ++k) {
      const size_t b = sizes[k];
      std::printf("%-8s", SizeName(b).c_str());
      for (size_t i = 0; i < impls.size(); ++i) {
        auto it = res[i].find(b);
        if (it == res[i].end()) {
          std::printf(" | %-10s %6s %6s", errors[i].empty() ? "-" : "FAILED", "-", "-");
          continue;
        }
        const double alg = busbw(i, b) / bus;
        if (it->second < 1e-3) std::printf(" | %7.1f us %6.2f %6.2f", it->second * 1e6, alg, busbw(i, b));
        else std::printf(" | %7.2f ms %6.2f %6.2f", it->second * 1e3, alg, busbw(i, b));
      }
      std::printf(" | %6.1f\n", memcpy_gbps[k]);
    }
    std::printf("loopback TCP (2 processes, median of %d): one-way stream %.2f GB/s; duplex stream "
                "%.2f GB/s per direction\n", rounds, stream, duplex);
    std::printf("ratios (>1 = we win): size | shm/ompi-shm (target 1.2) | shm/memcpy (0.5 at 64 MiB) "
                "| tcp/ompi-tcp (1.0) | tcp/gloo (2.0) | tcp/stream (0.9 from 16 MiB) | tcp/duplex "
                "| shm-sym/ompi-shm\n");
    for (size_t k = 0; k < sizes.size(); ++k) {
      const size_t b = sizes[k];
      // A ratio whose backends did not both run (--only, a failure) prints "-", not 0.
      auto r = [&](double a, double p) {
        char cell[16];
        if (p > 0 && a > 0) std::snprintf(cell, sizeof cell, "%5.2f", a / p);
        else std::snprintf(cell, sizeof cell, "%5s", "-");
        return std::string(cell);
      };
      std::printf("%-8s | %s | %s | %s | %s | %s | %s | %s\n", SizeName(b).c_str(),
                  r(busbw(1, b), busbw(2, b)).c_str(), r(busbw(1, b), memcpy_gbps[k]).c_str(),
                  r(busbw(0, b), busbw(3, b)).c_str(), r(busbw(0, b), busbw(4, b)).c_str(),
                  r(busbw(0, b), stream).c_str(), r(busbw(0, b), duplex).c_str(),
                  r(busbw(5, b), busbw(2, b)).c_str());
    }
    for (size_t i = 0; i < impls.size(); ++i) {
      if (!errors[i].empty()) std::printf("%s FAILED: %s\n", impls[i].name.c_str(), errors[i].c_str());
    }
    std::printf("total run time %.0f s\n", total_s);
    return 0;
  }
  for (size_t i = 0; i < impls.size(); ++i) {
    if (errors[i].empty()) continue;
    std::string e;
    for (char ch : errors[i]) e += (ch == '"' || ch == '\\') ? ' ' : ch;
    std::printf("{\"bench\": \"allreduce\", \"workload\": \"%s\", \"metric\": \"error\", "
                "\"error\": \"%s\"}\n", impls[i].peer_id.c_str(), e.c_str());
  }
  for (size_t k = 0; k < sizes.size(); ++k) {
    const size_t b = sizes[k];
    const std::string w = "f32-sum-" + std::to_string(ranks) + "ranks-" + std::to_string(b) + "B";
    const double best = std::max(busbw(0, b), busbw(1, b));
    if (b >= (1u << 20)) JsonRow(w, "busbw_GBps", best, impls[2].peer_id, busbw(2, b), true, 1.2);
    if (b >= (1u << 20) && res[5].count(b)) {
      JsonRow(w, "shm_symmetric_busbw_GBps", busbw(5, b), impls[2].peer_id, busbw(2, b), true, 1.2);
    }
    JsonRow(w, "tcp_busbw_GBps", busbw(0, b), impls[3].peer_id, busbw(3, b), true, 1.0);
    JsonRow(w, "tcp_busbw_GBps", busbw(0, b), impls[4].peer_id, busbw(4, b), true, 2.0);
    if (b >= (16u << 20)) {
      JsonRow(w, "tcp_busbw_GBps", busbw(0, b), "loopback-tcp-stream", stream, true, 0.9);
      JsonRow(w, "tcp_busbw_GBps", busbw(0, b), "loopback-tcp-duplex-stream", duplex, true, 0.9);
    }
    if (b == (64u << 20)) JsonRow(w, "busbw_GBps", busbw(1, b), "memcpy-1-thread", memcpy_gbps[k], true, 0.5);
    if (b == 4096 && res[0].count(b)) JsonRow(w, "tcp_time_us", res[0][b] * 1e6, "", 0, false, 100);
  }
  return 0;
}
