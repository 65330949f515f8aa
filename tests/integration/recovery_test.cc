// Exact recovery (issue 6): a 4-rank gpt job launched by the coordinator (`gantry up`, two
// workers) with its dataset and checkpoints on a real dev Ceph cluster; kill -9 a random rank
// at a random step, the coordinator restarts the gang from the last checkpoint, and the final
// checkpoint (parameters, optimizer state, data position, RNG) must be byte-identical to an
// uninterrupted run of the same job. Repeated for several kill points (seed printed;
// GANTRY_RECOVERY_SEED replays one). Labels: ceph, integration.
#include <gtest/gtest.h>

#include <signal.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <random>
#include <thread>

#include "coordinator/client.h"
#include "tests/integration/coord_harness.h"
#include "tests/integration/recovery_harness.h"
#include "storage/object_store.h"
#include "train/checkpoint.h"

namespace gantry::testing {
namespace {

constexpr int kRanks = 4;
constexpr int kSteps = 40;
constexpr int kCheckpointEvery = 5;
constexpr int kKillRuns = 3;
constexpr int kContext = 64;
constexpr int kVocab = 512;
constexpr int kRecords = 3000;

std::string JobYaml(const std::string& name, const std::string& data_uri,
                    const std::string& ckpt_uri) {
  return "name: " + name + "\nkind: train\n" +
         "resources: {ranks: " + std::to_string(kRanks) + ", cpus_per_rank: 1}\n" +
         "model: {type: gpt, vocab: " + std::to_string(kVocab) + ", context: " +
         std::to_string(kContext) + ", d_model: 128, layers: 2, heads: 4, mlp: 512}\n" +
         "data: {uri: \"" + data_uri + "\", batch_per_rank: 4, seed: 7}\n" +
         "optimizer: {type: adamw, lr: 1.0e-3, weight_decay: 0.01, warmup_steps: 5, "
         "schedule: cosine, grad_clip: 1.0}\n" +
         "train: {steps: " + std::to_string(kSteps) + ", log_every: 1, checkpoint_every: " +
         std::to_string(kCheckpointEvery) + ", keep_last: 2, threads: 1, checkpoint_uri: \"" +
         ckpt_uri + "\"}\n" +
         "comm: {backend: auto, timeout_s: 60}\nrestarts: {max: 2}\n";
}

// Random u16 tokens below kVocab, deterministic.
std::string WriteTokens(const std::filesystem::path& dir) {
  const std::string path = (dir / "tokens.bin").string();
  std::mt19937 gen(12345);
  std::vector<uint16_t> tokens(size_t(kRecords) * (kContext + 1));
  for (auto& t : tokens) t = uint16_t(gen() % kVocab);
  std::ofstream(path, std::ios::binary)
      .write(reinterpret_cast<const char*>(tokens.data()), std::streamsize(tokens.size() * 2));
  return path;
}

// Compares two checkpoints tensor by tensor; empty string when byte-identical.
std::string CompareCheckpoints(const train::LoadedCheckpoint& a,
                               const train::LoadedCheckpoint& b) {
  if (a.meta.step != b.meta.step)
    return "steps differ: " + std::to_string(a.meta.step) + " vs " + std::to_string(b.meta.step);
  if (a.tensors.size() != b.tensors.size()) return "tensor counts differ";
  for (size_t i = 0; i < a.tensors.size(); ++i) {
    const auto& x = a.tensors[i];
    const auto* y = b.Find(x.name);
    if (!y) return "tensor " + x.name + " missing";
    if (x.nbytes != y->nbytes) return "tensor " + x.name + " sizes differ";
    if (std::memcmp(a.data.data() + x.offset, b.data.data() + y->offset, x.nbytes) != 0) {
      double max_diff = 0;
      if (x.dtype == kernels::DType::kF32) {
        const float* p = reinterpret_cast<const float*>(a.data.data() + x.offset);
        const float* q = reinterpret_cast<const float*>(b.data.data() + y->offset);
        for (uint64_t k = 0; k < x.nbytes / 4; ++k)
          max_diff = std::max(max_diff, double(std::fabs(p[k] - q[k])));
      }
      return "tensor " + x.name + " differs (max abs diff " + std::to_string(max_diff) + ")";
    }
  }
  if (!(a.meta.data == b.meta.data) || a.meta.rng != b.meta.rng)
    return "data position or RNG state differ";
  return "";
}

// "data parallel ready" lines (one per rank and attempt) that report a world of `world`.
int CountReadyRanks(const std::string& logs, int world) {
  const std::string want = "\"world\":" + std::to_string(world) + ",";
  int n = 0;
  for (size_t p = logs.find("data parallel ready"); p != std::string::npos;
       p = logs.find("data parallel ready", p + 1)) {
    const size_t w = logs.find("\"world\":", p);
    n += w != std::string::npos && logs.compare(w, want.size(), want) == 0;
  }
  return n;
}

class Recovery : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("gantry-recovery-" + std::to_string(getpid()));
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    if (!std::getenv("GANTRY_CEPH_URI") &&
        RunCommand({"ceph-mon", "--version"}, seconds(30)).exit_code != 0)
      GTEST_SKIP() << "no Ceph: ceph-mon is not installed and GANTRY_CEPH_URI is not set "
                      "(scripts/setup.sh installs ceph-mon/ceph-osd)";
    std::string error;
    ceph_.Start(&error);
    ASSERT_TRUE(error.empty()) << error;
    prefix_ = "recovery-" + std::to_string(getpid());
  }
  void TearDown() override {
    up_.Stop();  // ranks, workers and coordinator first; then Ceph if this test started it
    if (!ceph_.started_here() && !prefix_.empty()) RemoveObjects();
    ceph_.Stop();
    if (!HasFailure()) std::filesystem::remove_all(dir_);
    else std::printf("[recovery] logs kept in %s\n", dir_.c_str());
  }

  // A shared cluster (scripts/test.sh) keeps running: remove this test's objects from it.
  void RemoveObjects() {
    auto store = storage::OpenObjectStore(ceph_.Uri(""));
    if (!store.ok()) return;
    auto keys = (*store)->List(prefix_ + "/");
    if (!keys.ok()) return;
    for (const auto& k : *keys) (*store)->Remove(k).IgnoreError();
  }

  std::unique_ptr<coordinator::CoordinatorClient> Client() {
    wire::ChannelOptions o;
    o.endpoint = up_.endpoint();
    o.timeout = milliseconds(5000);
    auto c = coordinator::CoordinatorClient::Connect(o);
    EXPECT_TRUE(c.ok()) << c.status().ToString();
    return c.ok() ? std::move(c).value() : nullptr;
  }
  std::string Logs(coordinator::CoordinatorClient& c, const std::string& id) {
    std::string out;
    uint64_t after = 0;
    for (int i = 0; i < 50; ++i) {
      auto b = c.Logs(id, -1, after, 1000);
      if (!b.ok() || b->records().empty()) break;
      for (const auto& r : b->records()) {
        out += "a" + std::to_string(r.attempt()) + " r" + std::to_string(r.rank()) + ": " +
               r.text() + "\n";
        after = r.seq();
      }
    }
    return out;
  }
  proto::JobInfo WaitDone(coordinator::CoordinatorClient& c, const std::string& id,
                          seconds timeout) {
    return WaitJobState(c, id, {"SUCCEEDED", "FAILED", "CANCELLED"}, timeout, milliseconds(100));
  }
  // Polls until rank 0 reported `step` (progress comes from its JSON step lines) or the job
  // left PENDING/PLACED/RUNNING; returns the last info.
  proto::JobInfo WaitForStep(coordinator::CoordinatorClient& c, const std::string& id,
                             int64_t step) {
    proto::JobInfo info;
    const auto end = std::chrono::steady_clock::now() + seconds(60);
    while (std::chrono::steady_clock::now() < end) {
      auto i = c.GetJob(id);
      if (i.ok()) info = *i;
      const std::string& st = info.state();
      if (st != "PENDING" && st != "PLACED" && st != "RUNNING") break;
      if (st == "RUNNING" && info.progress().step() >= step) break;
      std::this_thread::sleep_for(milliseconds(10));
    }
    return info;
  }
  StatusOr<train::LoadedCheckpoint> FinalCheckpoint(const std::string& uri) {
    GANTRY_ASSIGN_OR_RETURN(auto ck, train::Checkpointer::Open(uri, 2));
    return ck->ReadNewestValid();
  }

  std::filesystem::path dir_;
  std::string prefix_;
  CephDev ceph_;
  GantryUp up_;
};

TEST_F(Recovery, KilledRankResumesToByteIdenticalParameters) {
  const auto t0 = std::chrono::steady_clock::now();
  // 1. The dataset on Ceph, through the CLI.
  const std::string data_uri = ceph_.Uri(prefix_ + "/tokens");
  CommandResult put = RunCommand({GANTRY_BINARY, "dataset", "put", WriteTokens(dir_), data_uri,
                                  "--format", "tokens_u16", "--window",
                                  std::to_string(kContext + 1), "--shard-mb", "0.1"},
                                 seconds(60));
  ASSERT_EQ(put.exit_code, 0) << put.output;
  // 2. A local cluster: 2 workers x 2 CPU slots = one 4-rank gang.
  std::string error;
  up_.Start(GANTRY_BINARY, dir_, 2, 2, &error);
  ASSERT_TRUE(error.empty()) << error;
  auto c = Client();
  ASSERT_NE(c, nullptr);
  // 3. The uninterrupted reference run.
  const std::string ref_ckpt = ceph_.Uri(prefix_ + "/ckpt-ref");
  auto ref_id = c->Submit(JobYaml("recovery-ref", data_uri, ref_ckpt), "ref.yaml", dir_.string());
  ASSERT_TRUE(ref_id.ok()) << ref_id.status().ToString();
  proto::JobInfo ref = WaitDone(*c, *ref_id, seconds(90));
  ASSERT_EQ(ref.state(), "SUCCEEDED") << ref.error() << "\n" << Logs(*c, *ref_id);
  auto want = FinalCheckpoint(ref_ckpt);
  ASSERT_TRUE(want.ok()) << want.status().ToString();
  ASSERT_EQ(want->meta.step, kSteps);
  const auto ref_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("[recovery] reference run done at %.1f s (attempt %d)\n", ref_s, ref.attempt());

  // 4. Kill runs: a random rank at a random step after the first checkpoint.
  unsigned seed = unsigned(std::chrono::system_clock::now().time_since_epoch().count());
  if (const char* s = std::getenv("GANTRY_RECOVERY_SEED")) seed = unsigned(std::stoul(s));
  std::printf("[recovery] seed %u (GANTRY_RECOVERY_SEED=%u replays the kill points)\n", seed, seed);
  std::mt19937 gen(seed);
  for (int run = 0; run < kKillRuns; ++run) {
    // After the first checkpoint, and at least 12 steps before the end (so the kill lands
    // while every rank is still training).
    const int kill_step = kCheckpointEvery + 1 + int(gen() % (kSteps - kCheckpointEvery - 12));
    const int kill_rank = int(gen() % kRanks);
    SCOPED_TRACE("kill run " + std::to_string(run) + ": rank " + std::to_string(kill_rank) +
                 " at step " + std::to_string(kill_step));
    const std::string ckpt = ceph_.Uri(prefix_ + "/ckpt-kill" + std::to_string(run));
    auto id = c->Submit(JobYaml("recovery-kill" + std::to_string(run), data_uri, ckpt),
                        "kill.yaml", dir_.string());
    ASSERT_TRUE(id.ok()) << id.status().ToString();
    proto::JobInfo info = WaitForStep(*c, *id, kill_step);
    ASSERT_EQ(info.state(), "RUNNING")
        << "job never reached step " << kill_step << " while running: " << info.error() << "\n"
        << Logs(*c, *id);
    int pid = 0;
    for (const auto& r : info.rank_info())
      if (r.rank() == kill_rank) pid = r.pid();
    ASSERT_GT(pid, 0) << "no pid for rank " << kill_rank;
    const int64_t observed = info.progress().step();
    std::ifstream cmdline("/proc/" + std::to_string(pid) + "/cmdline");
    const std::string cmd((std::istreambuf_iterator<char>(cmdline)), {});
    ASSERT_NE(cmd.find("train"), std::string::npos) << "pid " << pid << " is not a rank: " << cmd;
    ASSERT_EQ(kill(pid, SIGKILL), 0) << "kill -9 " << pid;
    std::printf("[recovery] run %d: kill -9 rank %d (pid %d) at step %lld\n", run, kill_rank, pid,
                static_cast<long long>(observed));
    info = WaitDone(*c, *id, seconds(90));
    const std::string logs = Logs(*c, *id);
    ASSERT_EQ(info.state(), "SUCCEEDED") << info.error() << "\n" << logs;
    EXPECT_GE(info.attempt(), 1) << "the gang was not restarted\n" << logs;
    EXPECT_GE(CountReadyRanks(logs, kRanks), 2 * kRanks)
        << "expected 4 data-parallel ranks in both attempts\n" << logs;
    EXPECT_NE(logs.find("resumed from checkpoint"), std::string::npos)
        << "the restarted gang did not resume from a checkpoint\n" << logs;
    if (std::getenv("GANTRY_RECOVERY_VERBOSE")) std::printf("%s\n", logs.c_str());
    auto got = FinalCheckpoint(ckpt);
    ASSERT_TRUE(got.ok()) << got.status().ToString();
    const std::string diff = CompareCheckpoints(*want, *got);
    EXPECT_EQ(diff, "") << "final checkpoint after the kill differs from the uninterrupted run";
    std::printf("[recovery] run %d: %s after %d restart(s), at %.1f s\n", run,
                diff.empty() ? "byte-identical" : "DIFFERENT", info.attempt(),
                std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
}

}  // namespace
}  // namespace gantry::testing
