// Runs of bench/ddp_bench: job YAML for ours, the launch of each side, and the parsing of what
// the processes report (ours: JSON step lines with timestamps; peer: one JSON result line).
#include "bench/ddp_bench/runs.h"

#include <algorithm>
#include <cmath>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <vector>

#include "bench/ddp_bench/process_group.h"

namespace gantry::bench {
namespace {

using nlohmann::json;

// Environment a trainer or peer rank must not inherit from whoever runs the benchmark.
const std::vector<std::string> kLaunchEnv = {
    "RANK",          "WORLD_SIZE",         "LOCAL_RANK",    "LOCAL_WORLD_SIZE",
    "MASTER_ADDR",   "MASTER_PORT",        "GANTRY_JOB_ID", "GANTRY_ATTEMPT",
    "GANTRY_TOKEN",  "GANTRY_COORDINATOR", "JOB_COMPLETION_INDEX", "OMPI_COMM_WORLD_RANK",
    "OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "LD_PRELOAD"};

std::map<std::string, std::string> RankEnv(int rank, int world, int port) {
  return {{"RANK", std::to_string(rank)},       {"WORLD_SIZE", std::to_string(world)},
          {"LOCAL_RANK", std::to_string(rank)}, {"LOCAL_WORLD_SIZE", std::to_string(world)},
          {"MASTER_ADDR", "127.0.0.1"},         {"MASTER_PORT", std::to_string(port)},
          {"OMP_NUM_THREADS", "1"}};
}

// "2024-05-01T12:00:00.123Z" -> seconds since the epoch.
std::optional<double> ParseTimestamp(const std::string& ts) {
  std::tm t{};
  int ms = 0;
  if (std::sscanf(ts.c_str(), "%d-%d-%dT%d:%d:%d.%dZ", &t.tm_year, &t.tm_mon, &t.tm_mday,
                  &t.tm_hour, &t.tm_min, &t.tm_sec, &ms) != 7)
    return std::nullopt;
  t.tm_year -= 1900;
  t.tm_mon -= 1;
  return double(timegm(&t)) + ms / 1000.0;
}

std::vector<json> JsonLines(const std::string& path) {
  std::vector<json> out;
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);) {
    if (line.empty() || line[0] != '{') continue;
    json j = json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (j.is_object()) out.push_back(std::move(j));
  }
  return out;
}

struct StepLog {
  std::vector<std::pair<int64_t, double>> steps;  // (step, timestamp s)
  std::string backend;                            // from the "data parallel ready" line
  std::vector<std::pair<int64_t, double>> comm_share;  // (step, comm_wait_s / step_s)
};

StepLog ReadStepLog(const std::string& path) {
  StepLog log;
  for (const json& j : JsonLines(path)) {
    if (j.contains("backend") && j["backend"].is_string()) {
      log.backend = j["backend"];
      // shm without a collective: each rank's update sums the ranks' gradients (train/README.md)
      if (j.value("fused_sum", false)) log.backend += "+fused";
    }
    if (j.value("msg", "") != "train step" || !j.contains("step") || !j.contains("ts")) continue;
    const int64_t step = j["step"].get<int64_t>();
    auto ts = ParseTimestamp(j["ts"].get<std::string>());
    if (ts) log.steps.emplace_back(step, *ts);
    // Data-parallel step lines carry the engine's own split of the step time.
    if (j.contains("comm_wait_s") && j.contains("step_s") && j["step_s"].get<double>() > 0)
      log.comm_share.emplace_back(step, j["comm_wait_s"].get<double>() / j["step_s"].get<double>());
  }
  return log;
}

// Items per second of one process from its step log: steps after `warmup` over their time.
StatusOr<double> Throughput(const std::string& path, int warmup, int64_t items_per_step) {
  const StepLog log = ReadStepLog(path);
  std::optional<std::pair<int64_t, double>> first, last;
  for (const auto& s : log.steps) {
    if (s.first == warmup) first = s;
    if (!last || s.first > last->first) last = s;
  }
  if (!first || !last || last->first <= first->first || last->second <= first->second) {
    return InternalError("no usable \"train step\" lines in " + path + " (need steps " +
                         std::to_string(warmup) + " and later, log_every 1); read the log");
  }
  return double(last->first - first->first) * double(items_per_step) /
         (last->second - first->second);
}

// Items per second of independent trainers together, counted only while all of them ran:
// from the latest "step `warmup`" line of any to the earliest last step line of any. Each
// trainer's rate outside that interval (the other one not started yet, or done) would be
// that of a machine with a core free, and inflate the no-comm baseline.
StatusOr<double> ConcurrentThroughput(const std::vector<std::string>& paths, int warmup,
                                      int64_t items_per_step) {
  std::vector<StepLog> logs;
  double start = 0, end = 1e300;
  for (const std::string& path : paths) {
    logs.push_back(ReadStepLog(path));
    std::optional<double> first, last;
    for (const auto& [step, ts] : logs.back().steps) {
      if (step == warmup) first = ts;
      if (step >= warmup) last = std::max(last.value_or(ts), ts);
    }
    if (!first || !last || *last <= *first) {
      return InternalError("no usable \"train step\" lines in " + path + " (need steps " +
                           std::to_string(warmup) + " and later, log_every 1); read the log");
    }
    start = std::max(start, *first);
    end = std::min(end, *last);
  }
  if (end - start < 0.1) {
    return InternalError("the independent trainers ran together for only " +
                         std::to_string(end - start) + " s; their logs: " + paths.front());
  }
  int64_t steps = 0;
  for (const StepLog& log : logs) {
    for (const auto& [step, ts] : log.steps) steps += step > warmup && ts > start && ts <= end;
  }
  return double(steps) * double(items_per_step) / (end - start);
}

std::string JobYaml(const Workload& w, int ranks, const std::string& backend, int total_steps) {
  return "# written by bench/ddp_bench\nname: ddp-bench-" + w.name +
         "\nkind: train\nresources: {ranks: " + std::to_string(ranks) + ", cpus_per_rank: 1}\n" +
         w.spec_body + "train: {steps: " + std::to_string(total_steps) +
         ", log_every: 1, checkpoint_every: 0, keep_last: 1, threads: 1}\n" +
         "comm: {backend: " + backend + "}\n";
}

}  // namespace

StatusOr<Workload> MakeWorkload(const std::string& name, bool quick) {
  Workload w;
  w.name = name;
  if (name == "gpt-tiny") {
    w.metric = "tokens_per_s";
    w.batch = 8;
    w.items_per_rank_step = int64_t(w.batch) * 128;
    w.spec_body =
        "model: {type: gpt, vocab: 8192, context: 128, d_model: 256, layers: 4, heads: 4, "
        "mlp: 1024}\n"
        "data: {uri: synthetic, batch_per_rank: 8, seed: 1, synthetic_samples: 8192}\n"
        "optimizer: {type: adamw, lr: 3.0e-4, weight_decay: 0.01}\n";
    w.warmup = quick ? 2 : 3;
    w.steps = quick ? 6 : 15;
  } else if (name == "mlp-mnist") {
    w.metric = "samples_per_s";
    w.batch = 128;
    w.items_per_rank_step = w.batch;
    w.spec_body =
        "model: {type: mlp, widths: [784, 512, 512, 10], activation: relu}\n"
        "data: {uri: synthetic, batch_per_rank: 128, seed: 1, synthetic_samples: 60000}\n"
        "optimizer: {type: momentum, lr: 0.01, momentum: 0.9}\n";
    w.warmup = quick ? 10 : 20;
    w.steps = quick ? 100 : 600;
  } else {
    return InvalidArgumentError("unknown workload '" + name + "': use gpt-tiny or mlp-mnist");
  }
  return w;
}

StatusOr<Measurement> RunOurs(const RunEnv& env, const Workload& w, OursMode mode, int ranks,
                              const std::string& backend, int run_id) {
  const std::filesystem::path dir =
      std::filesystem::path(env.work_dir) / ("ours-" + std::to_string(run_id));
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
  std::filesystem::create_directories(dir, ec);
  if (ec) return ErrnoError("create run directory " + dir.string(), ec.value());
  const bool ddp = mode == OursMode::kDdp;
  const std::string spec = (dir / "job.yaml").string();
  std::ofstream(spec) << JobYaml(w, ddp ? ranks : 1, backend, w.warmup + w.steps);
  int port = 0;
  if (ddp) {
    GANTRY_ASSIGN_OR_RETURN(port, FreeLoopbackPort());
  }
  ProcessGroup group;
  std::vector<std::string> logs;
  for (int r = 0; r < ranks; ++r) {
    ChildSpec c;
    // Only rank 0 of a job writes checkpoints; independent trainers each need their own dir.
    const std::string ckpt = (dir / ("ckpt-" + std::to_string(ddp ? 0 : r))).string();
    c.argv = {env.gantry, "train", spec, "--no-resume", "--checkpoint-dir", ckpt,
              "--threads", "1", "--progress", "off"};
    c.unset_env = kLaunchEnv;
    // Independent trainers share the host as the DDP ranks do: LOCAL_RANK/LOCAL_WORLD_SIZE
    // tell each (as they tell a rank) its place among the trainers the cores are split among,
    // so both sides make the same per-host choices (CPU binding, whether a data prefetch
    // thread has a core of its own).
    c.env = ddp ? RankEnv(r, ranks, port)
                : std::map<std::string, std::string>{{"OMP_NUM_THREADS", "1"},
                                                     {"LOCAL_RANK", std::to_string(r)},
                                                     {"LOCAL_WORLD_SIZE", std::to_string(ranks)}};
    c.env["GANTRY_LOG_LEVEL"] = "info";
    c.log_path = (dir / ("rank-" + std::to_string(r) + ".log")).string();
    logs.push_back(c.log_path);
    GANTRY_RETURN_IF_ERROR(group.Start(c));
  }
  GANTRY_RETURN_IF_ERROR(group.WaitAll(env.timeout));
  Measurement m;
  if (ddp) {
    GANTRY_ASSIGN_OR_RETURN(m.items_per_s,
                            Throughput(logs[0], w.warmup, w.items_per_rank_step * ranks));
    const StepLog log = ReadStepLog(logs[0]);
    m.backend = log.backend;
    std::vector<double> shares;
    for (const auto& [step, share] : log.comm_share)
      if (step > w.warmup) shares.push_back(share);
    if (!shares.empty()) {
      std::nth_element(shares.begin(), shares.begin() + shares.size() / 2, shares.end());
      m.engine_comm_wait_share = shares[shares.size() / 2];
    }
  } else {
    // Independent trainers: their rates add up, over the time they all ran.
    GANTRY_ASSIGN_OR_RETURN(m.items_per_s,
                            ConcurrentThroughput(logs, w.warmup, w.items_per_rank_step));
  }
  return m;
}

const char* PeerModeName(PeerMode mode) {
  switch (mode) {
    case PeerMode::kDdp: return "ddp";
    case PeerMode::kNoSync: return "nosync";
    case PeerMode::kSingle: return "single";
  }
  return "?";
}

StatusOr<Measurement> RunPeer(const RunEnv& env, const Workload& w, PeerMode mode, int ranks,
                              bool tcmalloc, int run_id) {
  const std::filesystem::path dir =
      std::filesystem::path(env.work_dir) / ("peer-" + std::to_string(run_id));
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return ErrnoError("create run directory " + dir.string(), ec.value());
  if (mode == PeerMode::kSingle) ranks = 1;
  int port = 0;
  GANTRY_ASSIGN_OR_RETURN(port, FreeLoopbackPort());
  ProcessGroup group;
  std::string log0;
  for (int r = 0; r < ranks; ++r) {
    ChildSpec c;
    c.argv = {env.python,         env.peer_script,         "--workload",
              w.name,             "--mode",                PeerModeName(mode),
              "--batch",          std::to_string(w.batch), "--warmup",
              std::to_string(w.warmup), "--steps",         std::to_string(w.steps),
              "--threads",        "1"};
    c.unset_env = kLaunchEnv;
    c.env = RankEnv(r, ranks, port);
    if (tcmalloc) c.env["LD_PRELOAD"] = env.tcmalloc;
    c.log_path = (dir / ("rank-" + std::to_string(r) + ".log")).string();
    if (r == 0) log0 = c.log_path;
    GANTRY_RETURN_IF_ERROR(group.Start(c));
  }
  GANTRY_RETURN_IF_ERROR(group.WaitAll(env.timeout));
  for (const json& j : JsonLines(log0)) {
    if (j.contains("error")) return InternalError("peer: " + j["error"].get<std::string>());
    if (!j.contains("seconds")) continue;
    const double s = j["seconds"].get<double>();
    if (s <= 0) break;
    Measurement m;
    m.items_per_s = j["steps"].get<double>() * j["items_per_step"].get<double>() / s;
    m.backend = "gloo";
    return m;
  }
  return InternalError("the PyTorch peer printed no result line; read " + log0);
}

}  // namespace gantry::bench
