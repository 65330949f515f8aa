// loader_bench: read throughput of the dataset loader on Ceph vs `rados bench seq`, same pool,
// same run. Writes a >= 256 MiB token dataset (4 MiB chunks) through DatasetWriter, has
// `rados bench write` lay down the same volume in 4 MiB objects, then interleaves: one epoch
// through DatasetLoader (CRC-checked, shuffled, copied into the caller's batch buffer) and one
// `rados bench seq -t 16`. Medians of --runs. Needs the env of scripts/ceph-dev.sh.
//   loader_bench [--mib 256] [--runs 3] [--json] [--keep]
#include <sys/wait.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <random>
#include <string>
#include <vector>

#include "storage/dataset.h"
#include "storage/loader.h"
#include "storage/object_store.h"

namespace {

using gantry::Status;
using namespace gantry::storage;

std::string Env(const char* n) { return std::getenv(n) ? std::getenv(n) : ""; }

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

// Runs a shell command; returns its stdout (stderr passes through). Empty on failure.
std::string Run(const std::string& cmd, int* rc) {
  std::string out;
  FILE* p = ::popen(cmd.c_str(), "r");
  if (!p) return out;
  char buf[4096];
  while (size_t n = std::fread(buf, 1, sizeof(buf), p)) out.append(buf, n);
  int st = ::pclose(p);
  *rc = WIFEXITED(st) ? WEXITSTATUS(st) : 1;
  return out;
}

std::string RadosCmd() {
  return "rados -c " + Env("CEPH_CONF") + " -n client." + Env("GANTRY_CEPH_ID") + " --keyring " +
         Env("GANTRY_CEPH_KEYRING") + " -p " + Env("GANTRY_CEPH_POOL");
}

// "Bandwidth (MB/sec):   612.3" from rados bench; -1 if absent.
double ParseBandwidth(const std::string& out) {
  auto pos = out.find("Bandwidth (MB/sec):");
  return pos == std::string::npos ? -1 : std::atof(out.c_str() + pos + 19);
}

Status WriteDataset(ObjectStore& store, uint64_t mib) {
  RecordLayout layout{.kind = RecordKind::kTokens, .dtype = DType::kU16, .window = 2048};  // 4 KiB
  DatasetWriterOptions o{.shard_bytes = 64ull << 20, .chunk_bytes = 4ull << 20, .source = "loader_bench random tokens"};
  GANTRY_ASSIGN_OR_RETURN(auto w, DatasetWriter::Create(&store, layout, o));
  std::vector<uint16_t> block(8 << 20);  // 16 MiB, written repeatedly with a fresh prefix
  std::mt19937 rng(1);
  for (auto& t : block) t = static_cast<uint16_t>(rng() % 8192);
  const uint64_t blocks = mib / 16;
  for (uint64_t b = 0; b < blocks; ++b) {
    block[0] = static_cast<uint16_t>(b);
    GANTRY_RETURN_IF_ERROR(w->Append(std::as_bytes(std::span<uint16_t>(block))));
  }
  return w->Finish().status();
}

// The next epoch through the loader (created once, like a trainer's); MiB/s (rados bench
// reports "MB/sec" computed in MiB too).
gantry::StatusOr<double> LoaderEpoch(DatasetLoader& loader, std::vector<std::byte>& batch) {
  const uint64_t n = loader.BatchesInEpoch(loader.position().epoch);
  auto t0 = std::chrono::steady_clock::now();
  for (uint64_t i = 0; i < n; ++i) GANTRY_RETURN_IF_ERROR(loader.Next(batch));
  double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return n * batch.size() / double(1 << 20) / s;
}

}  // namespace

int main(int argc, char** argv) {
  uint64_t mib = 256;
  int runs = 3;
  bool json = false, keep = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--json") json = true;
    else if (a == "--keep") keep = true;
    else if (a == "--mib" && i + 1 < argc) mib = std::max<uint64_t>(16, std::strtoull(argv[++i], nullptr, 10) / 16 * 16);
    else if (a == "--runs" && i + 1 < argc) runs = std::max(1, std::atoi(argv[++i]));
    else { std::cerr << "usage: loader_bench [--mib 256] [--runs 3] [--json] [--keep]\n"; return 2; }
  }
  if (Env("CEPH_CONF").empty() || Env("GANTRY_CEPH_POOL").empty()) {
    std::cerr << "loader_bench: no dev Ceph; run: eval \"$(scripts/ceph-dev.sh start /tmp/gantry-ceph)\"\n";
    return 2;
  }
  const std::string run_name = "gantry-loader-bench-" + std::to_string(::getpid());
  const std::string uri = "ceph://" + Env("GANTRY_CEPH_POOL") + "/bench/" + run_name;
  auto store = OpenObjectStore(uri);
  if (!store.ok()) { std::cerr << "loader_bench: " << store.status().ToString() << "\n"; return 1; }
  auto t0 = std::chrono::steady_clock::now();
  if (Status st = WriteDataset(**store, mib); !st.ok()) { std::cerr << "loader_bench: " << st.ToString() << "\n"; return 1; }
  double write_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  int rc = 0;
  const uint64_t objects = mib / 4;
  std::string wout = Run(RadosCmd() + " bench 600 write -b 4194304 -t 16 --no-cleanup --max-objects " +
                         std::to_string(objects) + " --run-name " + run_name + " 2>&1", &rc);
  if (rc != 0) { std::cerr << "loader_bench: rados bench write failed:\n" << wout; return 1; }
  auto loader = DatasetLoader::Open(uri, {.seed = 7, .batch = 256, .prefetch_batches = 4,
                                          .group_chunks = 4, .group_buffers = 5});
  if (!loader.ok()) { std::cerr << "loader_bench: " << loader.status().ToString() << "\n"; return 1; }
  std::vector<std::byte> batch((*loader)->batch_bytes());
  std::vector<double> ours, peer;
  for (int r = 0; r < runs + 1; ++r) {  // run 0 is warm-up (fresh buffers, first touch)
    auto o = LoaderEpoch(**loader, batch);
    if (!o.ok()) { std::cerr << "loader_bench: " << o.status().ToString() << "\n"; return 1; }
    std::string sout = Run(RadosCmd() + " bench 600 seq -t 16 --run-name " + run_name + " 2>&1", &rc);
    double p = ParseBandwidth(sout);
    if (rc != 0 || p <= 0) { std::cerr << "loader_bench: rados bench seq failed:\n" << sout; return 1; }
    if (r > 0) { ours.push_back(*o); peer.push_back(p); }
  }
  loader->reset();
  if (!keep) {
    Run(RadosCmd() + " cleanup --run-name " + run_name + " >/dev/null 2>&1", &rc);
    auto keys = (*store)->List("");
    if (keys.ok()) for (auto& k : *keys) (void)(*store)->Remove(k);
  }
  // Ratio: median of the per-pair ratios (each pair ran back to back), robust to load drift.
  std::vector<double> pair_ratio;
  for (size_t i = 0; i < ours.size(); ++i) pair_ratio.push_back(ours[i] / peer[i]);
  const double o = Median(ours), p = Median(peer), ratio = Median(pair_ratio);
  if (json) {
    std::printf("{\"bench\": \"loader\", \"workload\": \"ceph-tokens-%lluMiB\", \"metric\": \"read_MiB_per_s\", "
                "\"ours\": %.1f, \"peer\": \"rados-bench-seq-t16\", \"peer_value\": %.1f, \"ratio\": %.3f, \"target\": 0.9}\n",
                static_cast<unsigned long long>(mib), o, p, ratio);
    std::printf("{\"bench\": \"loader\", \"workload\": \"ceph-tokens-%lluMiB\", \"metric\": \"ingest_MiB_per_s\", "
                "\"ours\": %.1f, \"target\": 80.0}\n", static_cast<unsigned long long>(mib), mib / write_s);
    return 0;
  }
  std::printf("loader_bench: %llu MiB dataset (4 KiB records, 4 MiB chunks) on %s, median of %d runs\n",
              static_cast<unsigned long long>(mib), uri.c_str(), runs);
  std::printf("%-34s %12s %12s %8s\n", "case", "ours MiB/s", "peer MiB/s", "ratio");
  std::printf("%-34s %12.1f %12.1f %8.2f   (peer: rados bench seq -t 16, 4 MiB objects)\n",
              "epoch read, CRC-checked, shuffled", o, p, ratio);
  std::printf("%-34s %12.1f %12s %8s\n", "dataset write (ingest path)", mib / write_s, "-", "-");
  std::printf("runs ours: ");
  for (double v : ours) std::printf("%.0f ", v);
  std::printf("  peer: ");
  for (double v : peer) std::printf("%.0f ", v);
  std::printf("\n");
  return 0;
}
