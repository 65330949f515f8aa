// train_bench: full training steps (forward, backward, optimizer) of gpt-tiny and mlp-mnist on
// one process at 1 and 2 threads, ours against PyTorch 1.13 in the same run. The peer runs in
// child processes (torch_peer.py, plain glibc malloc and with tcmalloc preloaded; the better is
// the peer), interleaved window by window with ours after warm-up; each figure is the median of
// the windows. Prints a table, or --json rows in the format of ../shared/notes/workloads.md.
// --device cuda[:N] runs both sides on a GPU instead (ours: the CUDA kernels; the peer: PyTorch
// CUDA, fused optimizers, torch.autocast("cuda", bfloat16) for bf16; python3 must see the GPU).
#include <signal.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <ctime>
#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "bench/train_bench/peer_process.h"
#include "kernels/runtime.h"
#include "train/model.h"
#include "train/optimizer.h"
#include "train/rng.h"

namespace gantry::bench {
namespace {

using Clock = std::chrono::steady_clock;
using nlohmann::json;

constexpr double kTargetRatio = 1.5;
constexpr char kTcmalloc[] = "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4";
constexpr auto kPeerStartTimeout = std::chrono::seconds(180);
constexpr auto kPeerWindowTimeout = std::chrono::seconds(600);

// One timed window: wall seconds and process CPU seconds (all threads). On a shared, loaded
// machine the CPU figure measures the work done rather than the time the scheduler granted.
struct Timing {
  double wall = 0;
  double cpu = 0;
};

double ProcessCpuSeconds() {
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
}

struct Workload {
  std::string name;
  ModelSpec model;
  OptimizerSpec optimizer;
  int batch = 0;
  std::string metric;     // tokens_per_s | samples_per_s
  int window_steps = 0;   // steps per timed window
  int warmup_steps = 0;
};

struct Options {
  bool json = false;
  bool quick = false;
  bool peers = true;
  int rounds = 5;  // timed windows per side
  std::vector<std::string> workloads = {"gpt-tiny", "mlp-mnist"};
  std::vector<int> threads = {1, 2};
  // f32: the targets' configuration. bf16: mixed precision on both sides (our
  // train.precision bf16 against torch.autocast("cpu", torch.bfloat16)).
  std::vector<std::string> precisions = {"f32", "bf16"};
  std::string python = "/usr/bin/python3";
  std::string peer_script = TRAIN_BENCH_PEER_SCRIPT;
  std::string device = "cpu";  // or cuda[:N]: both sides on that GPU
};

StatusOr<Workload> MakeWorkload(const std::string& name, bool quick) {
  Workload w;
  w.name = name;
  if (name == "gpt-tiny") {
    w.model.type = "gpt";
    w.model.vocab = 8192;
    w.model.context = 128;
    w.model.d_model = 256;
    w.model.layers = 4;
    w.model.heads = 4;
    w.model.mlp = 1024;
    w.optimizer.type = "adamw";
    w.optimizer.lr = 3e-4;
    w.optimizer.weight_decay = 0.01;
    w.batch = 16;
    w.metric = "tokens_per_s";
    w.window_steps = quick ? 1 : 3;
    w.warmup_steps = quick ? 1 : 2;
  } else if (name == "mlp-mnist") {
    w.model.type = "mlp";
    w.model.widths = {784, 512, 512, 10};
    w.model.activation = "relu";
    w.optimizer.type = "momentum";
    w.optimizer.lr = 0.01;
    w.optimizer.momentum = 0.9;
    w.batch = 128;
    w.metric = "samples_per_s";
    // 120 steps (~0.3-0.5 s): 40-step windows were ~0.1 s, short enough that one scheduler
    // hiccup of another tenant moved a median by several percent.
    w.window_steps = quick ? 5 : 120;
    w.warmup_steps = quick ? 2 : 20;
  } else {
    return InvalidArgumentError("unknown workload '" + name + "': expected gpt-tiny or mlp-mnist");
  }
  return w;
}

// Our side: model, optimizer and one random batch, all preallocated.
class OurRunner {
 public:
  Status Init(const Workload& w, kernels::Device device) {
    using train::Model;
    const kernels::Device cpu = kernels::Device::Cpu();
    device_ = device;
    GANTRY_ASSIGN_OR_RETURN(model_, Model::Create(w.model, w.batch, device));
    GANTRY_RETURN_IF_ERROR(model_->InitParams(1));
    GANTRY_ASSIGN_OR_RETURN(opt_, train::Optimizer::Create(w.optimizer, *model_));
    GANTRY_ASSIGN_OR_RETURN(train::BatchLayout layout, train::BatchLayoutFor(w.model, w.batch));
    GANTRY_ASSIGN_OR_RETURN(batch_, train::AllocateBatch(layout, cpu));
    train::Rng rng(7);
    const uint64_t classes = w.model.type == "gpt" ? w.model.vocab : w.model.widths.back();
    kernels::Tensor& in = batch_.inputs;
    for (int64_t i = 0; i < in.numel(); ++i) {
      if (in.dtype() == kernels::DType::kI32) {
        in.i32()[i] = int32_t(rng.Below(classes));
      } else {
        in.f32()[i] = rng.Normal();
      }
    }
    for (int64_t i = 0; i < batch_.targets.numel(); ++i) {
      batch_.targets.i32()[i] = int32_t(rng.Below(classes));
    }
    lr_ = float(w.optimizer.lr);
    if (device.is_cuda()) {  // the batch lives on the GPU, as the trainer's device batch does
      GANTRY_ASSIGN_OR_RETURN(train::Batch on_device, train::AllocateBatch(layout, device));
      GANTRY_RETURN_IF_ERROR(kernels::Copy(batch_.inputs, on_device.inputs));
      GANTRY_RETURN_IF_ERROR(kernels::Copy(batch_.targets, on_device.targets));
      batch_ = std::move(on_device);
      kernels::SetMatmulWeights(nullptr, 0);
    } else {
      // As the trainer does (bf16: parameter matrices cast once per step; f32: no effect).
      kernels::SetMatmulWeights(model_->flat_params().raw(), model_->flat_params().nbytes());
    }
    return OkStatus();
  }
  // Time of `steps` full train steps.
  StatusOr<Timing> Window(int steps) {
    const double cpu0 = ProcessCpuSeconds();
    const Clock::time_point t0 = Clock::now();
    for (int i = 0; i < steps; ++i) {
      if (device_.is_cuda()) {  // as the trainer does on a GPU: backward, then one update
        GANTRY_RETURN_IF_ERROR(model_->Forward(batch_));
        GANTRY_RETURN_IF_ERROR(model_->Backward(batch_));
        GANTRY_RETURN_IF_ERROR(opt_->Step(step_++, lr_));
        continue;
      }
      kernels::NewMatmulWeightsEpoch();
      GANTRY_RETURN_IF_ERROR(model_->Forward(batch_));
      // As `gantry train` does on one process without clipping (train/trainer.cc): the update
      // runs inside backward, range by range, and yields the gradient norm the trainer logs.
      GANTRY_RETURN_IF_ERROR(opt_->BeginStepInBackward(step_++, lr_));
      GANTRY_RETURN_IF_ERROR(model_->Backward(batch_));
      GANTRY_RETURN_IF_ERROR(opt_->EndStepInBackward().status());
    }
    GANTRY_RETURN_IF_ERROR(kernels::Synchronize(device_));  // GPU: the queued work counts
    return Timing{std::chrono::duration<double>(Clock::now() - t0).count(),
                  ProcessCpuSeconds() - cpu0};
  }
  int64_t items_per_step() const { return model_->ItemsPerBatch(); }
  StatusOr<float> loss() const { return model_->Loss(); }

 private:
  std::unique_ptr<train::Model> model_;
  std::unique_ptr<train::Optimizer> opt_;
  train::Batch batch_;
  kernels::Device device_ = kernels::Device::Cpu();
  int64_t step_ = 0;
  float lr_ = 0;
};

// One PyTorch peer process (plain or tcmalloc).
class TorchPeer {
 public:
  explicit TorchPeer(std::string variant) : variant_(std::move(variant)) {}
  const std::string& variant() const { return variant_; }

  Status Start(const Options& o, const Workload& w, int threads, const std::string& precision) {
    const std::string n = std::to_string(threads);
    std::map<std::string, std::string> env = {{"OMP_NUM_THREADS", n},
                                              {"OPENBLAS_NUM_THREADS", n}};
    if (variant_ == "pytorch-tcmalloc") env["LD_PRELOAD"] = kTcmalloc;
    GANTRY_RETURN_IF_ERROR(proc_.Start({o.python, o.peer_script, "--workload", w.name, "--threads",
                                        std::to_string(threads), "--batch",
                                        std::to_string(w.batch), "--precision", precision,
                                        "--device", o.device},
                                       env));
    GANTRY_ASSIGN_OR_RETURN(json reply, Read(kPeerStartTimeout));
    if (!reply.value("ready", false)) {
      return UnavailableError(variant_ + " peer did not start: " + reply.dump());
    }
    blas_ = reply.value("blas", std::string("unknown"));
    return OkStatus();
  }
  StatusOr<Timing> Window(int steps) {
    GANTRY_RETURN_IF_ERROR(proc_.Send("run " + std::to_string(steps)));
    GANTRY_ASSIGN_OR_RETURN(json reply, Read(kPeerWindowTimeout));
    if (!reply.contains("seconds") || !reply.contains("cpu_seconds")) {
      return UnavailableError(variant_ + " peer sent no timing: " + reply.dump());
    }
    return Timing{reply["seconds"].get<double>(), reply["cpu_seconds"].get<double>()};
  }
  void Stop() { proc_.Stop(); }
  // SIGSTOP / SIGCONT the whole peer process while the other side is timed.
  void Pause() { if (proc_.pid() > 0) kill(proc_.pid(), SIGSTOP); }
  void Resume() { if (proc_.pid() > 0) kill(proc_.pid(), SIGCONT); }
  const std::string& blas() const { return blas_; }

 private:
  StatusOr<json> Read(std::chrono::milliseconds timeout) {
    GANTRY_ASSIGN_OR_RETURN(std::string line, proc_.ReadLine(timeout));
    json j = json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded()) return UnavailableError(variant_ + " peer sent non-JSON: " + line);
    if (j.contains("error")) return UnavailableError(variant_ + " peer: " + j.dump());
    return j;
  }
  std::string variant_;
  std::string blas_;
  PeerProcess proc_;
};

double Median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

struct PeerResult {
  std::string variant;
  double value = 0;      // items per wall second
  double cpu_value = 0;  // items per CPU second
};

struct Row {
  std::string workload, metric;
  int threads = 0;
  std::string precision;  // f32 | bf16 (both sides)
  std::string device;     // cpu | cuda[:N] (both sides)
  double ours = 0;      // items per wall second (median window)
  double ours_cpu = 0;  // items per CPU second (median window)
  std::vector<PeerResult> peers;
  std::string peer_error;
  std::string peer_blas;  // BLAS under the peer's Linear ("openblas", "reference", ...)
};

// Runs one (workload, threads) case: warm-up, then `rounds` interleaved windows per side.
StatusOr<Row> RunCase(const Options& o, const Workload& w, int threads,
                      const std::string& precision) {
  kernels::SetNumThreads(threads);
  GANTRY_ASSIGN_OR_RETURN(const kernels::Device device, kernels::ParseDevice(o.device));
  GANTRY_RETURN_IF_ERROR(kernels::SetMatmulPrecisionFor(
      device, precision == "bf16" ? kernels::MatmulPrecision::kBf16 : kernels::MatmulPrecision::kF32));
  Row row{w.name, w.metric, threads, precision};
  row.device = o.device;
  OurRunner ours;
  GANTRY_RETURN_IF_ERROR(ours.Init(w, device));
  std::vector<std::unique_ptr<TorchPeer>> peers;
  if (o.peers) {
    for (const char* v : {"pytorch", "pytorch-tcmalloc"}) {
      // tcmalloc speeds up the host allocator: a CPU matter only.
      if (std::string(v) == "pytorch-tcmalloc" &&
          (device.is_cuda() || !std::filesystem::exists(kTcmalloc))) {
        continue;
      }
      auto p = std::make_unique<TorchPeer>(v);
      Status s = p->Start(o, w, threads, precision);
      if (!s.ok()) {  // report it in the table and go on without this variant
        row.peer_error += s.message().substr(0, s.message().find('\n')) + "; ";
        continue;
      }
      row.peer_blas = p->blas();
      peers.push_back(std::move(p));
    }
  }
  GANTRY_RETURN_IF_ERROR(ours.Window(w.warmup_steps).status());
  for (auto& p : peers) GANTRY_RETURN_IF_ERROR(p->Window(w.warmup_steps).status());
  std::vector<double> our_wall, our_cpu;
  std::vector<std::vector<double>> peer_wall(peers.size()), peer_cpu(peers.size());
  // Before every timed window, let the previous side's helper threads go to sleep: OpenBLAS's
  // workers spin (yielding) for ~0.1 s after their last call, which took a third of our
  // 2-thread mlp-mnist throughput in windows that followed a peer's. Our pool's helpers sleep
  // within ~1.2 ms (kernels/runtime.cc: 200 us of spinning, then 1 ms of yielding).
  const auto settle = [&] {
    if (threads > 1 && !device.is_cuda()) std::this_thread::sleep_for(std::chrono::milliseconds(300));
  };
  for (int r = 0; r < o.rounds; ++r) {
    settle();
    for (auto& p : peers) p->Pause();
    StatusOr<Timing> t = ours.Window(w.window_steps);
    for (auto& p : peers) p->Resume();
    GANTRY_RETURN_IF_ERROR(t.status());
    our_wall.push_back(t->wall);
    our_cpu.push_back(t->cpu);
    for (size_t i = 0; i < peers.size(); ++i) {
      settle();
      for (size_t j = 0; j < peers.size(); ++j) {
        if (j != i) peers[j]->Pause();
      }
      StatusOr<Timing> pt = peers[i]->Window(w.window_steps);
      for (size_t j = 0; j < peers.size(); ++j) {
        if (j != i) peers[j]->Resume();
      }
      GANTRY_RETURN_IF_ERROR(pt.status());
      peer_wall[i].push_back(pt->wall);
      peer_cpu[i].push_back(pt->cpu);
    }
  }
  const double items = double(ours.items_per_step()) * w.window_steps;
  row.ours = items / Median(our_wall);
  row.ours_cpu = items / Median(our_cpu);
  for (size_t i = 0; i < peers.size(); ++i) {
    row.peers.push_back(
        {peers[i]->variant(), items / Median(peer_wall[i]), items / Median(peer_cpu[i])});
    peers[i]->Stop();
  }
  GANTRY_ASSIGN_OR_RETURN(float loss, ours.loss());
  if (!std::isfinite(loss)) {
    return InternalError(w.name + ": our loss is not finite after the run (" +
                         std::to_string(loss) + ")");
  }
  return row;
}

// The better PyTorch variant by wall-clock throughput (the peer of the row).
std::optional<PeerResult> BestPeer(const Row& r) {
  std::optional<PeerResult> best;
  for (const PeerResult& p : r.peers) {
    if (!best || p.value > best->value) best = p;
  }
  return best;
}

double PeerValue(const Row& r, const std::string& variant) {
  for (const PeerResult& p : r.peers) {
    if (p.variant == variant) return p.value;
  }
  return 0;
}

void PrintTable(const std::vector<Row>& rows) {
  std::printf("%-10s %5s %7s %-14s %10s %10s %12s %-17s %6s %6s %10s\n", "workload", "prec",
              "threads", "metric", "ours", "pytorch", "pytorch+tcm", "peer (best)", "ratio",
              "target", "ratio(cpu)");
  for (const Row& r : rows) {
    const auto best = BestPeer(r);
    const std::string threads = r.device == "cpu" ? std::to_string(r.threads) : r.device;
    // A figure that was not measured (--no-peer, a failed peer) prints "-", not 0.
    auto cell = [](double v, int width, int decimals) {
      char buf[32];
      if (v > 0) std::snprintf(buf, sizeof buf, "%*.*f", width, decimals, v);
      else std::snprintf(buf, sizeof buf, "%*s", width, "-");
      return std::string(buf);
    };
    std::printf("%-10s %5s %7s %-14s %10.1f %s %s %-17s %s %6.1f %s\n", r.workload.c_str(),
                r.precision.c_str(), threads.c_str(), r.metric.c_str(), r.ours,
                cell(PeerValue(r, "pytorch"), 10, 1).c_str(),
                cell(PeerValue(r, "pytorch-tcmalloc"), 12, 1).c_str(),
                best ? best->variant.c_str() : "-", cell(best ? r.ours / best->value : 0, 6, 2).c_str(),
                kTargetRatio, cell(best ? r.ours_cpu / best->cpu_value : 0, 10, 2).c_str());
    if (!r.peer_error.empty()) std::printf("  peer problem: %s\n", r.peer_error.c_str());
  }
  std::printf("prec bf16: matmuls on bf16 inputs with f32 accumulation on both sides (ours:\n"
              "train.precision bf16, CPU bf16 support: %s; PyTorch: torch.autocast(\"cpu\", bfloat16)).\n",
              kernels::CpuBf16Support().c_str());
  std::printf("ours/pytorch: tokens or samples per second, median of the timed windows.\n"
              "ratio = ours / best peer (> 1: we win). ratio(cpu) = the same per second of\n"
              "process CPU time (all threads, spin-waits included): steadier on a loaded machine.\n");
  if (!rows.empty() && !rows.front().peer_blas.empty()) {
    std::printf("peer BLAS: %s%s\n", rows.front().peer_blas.c_str(),
                std::getenv("OPENBLAS_CORETYPE") ? " (OPENBLAS_CORETYPE is set: the peer may not be"
                                                   " at its best)"
                                                 : "");
  }
  for (const Row& r : rows) {
    if (r.peer_blas == "reference") {
      std::printf("WARNING: PyTorch runs on the reference (netlib) BLAS here, ~20x slower than\n"
                  "OpenBLAS: the peer is not at its best. Install Debian libopenblas0-pthread.\n");
      break;
    }
  }
}

void PrintJson(const std::vector<Row>& rows) {
  for (const Row& r : rows) {
    nlohmann::ordered_json j = {{"bench", "train"}, {"workload", r.workload},
                                {"precision", r.precision}, {"device", r.device},
                                {"threads", r.threads},
                                {"metric", r.metric}, {"ours", r.ours}};
    if (const auto best = BestPeer(r)) {
      j["peer"] = best->variant;
      j["peer_value"] = best->value;
      j["ratio"] = r.ours / best->value;
      j["ratio_cpu"] = r.ours_cpu / best->cpu_value;
      j["ours_per_cpu_s"] = r.ours_cpu;
      j["peer_per_cpu_s"] = best->cpu_value;
    }
    j["target"] = kTargetRatio;
    if (!r.peer_blas.empty()) j["peer_blas"] = r.peer_blas;
    std::printf("%s\n", j.dump().c_str());
  }
}

std::vector<std::string> Split(const std::string& s) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= s.size()) {
    const size_t comma = s.find(',', start);
    out.push_back(s.substr(start, comma == std::string::npos ? std::string::npos : comma - start));
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return out;
}

constexpr char kUsage[] =
    "usage: train_bench [--json] [--quick] [--no-peer] [--rounds N] [--workload gpt-tiny,mlp-mnist]\n"
    "                   [--threads 1,2] [--precision f32,bf16] [--python /usr/bin/python3]\n"
    "                   [--peer-script PATH] [--device cpu|cuda[:N]]\n";

StatusOr<Options> ParseArgs(int argc, char** argv) {
  Options o;
  bool rounds_set = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const bool has_value = i + 1 < argc;
    if (a == "--json") {
      o.json = true;
    } else if (a == "--quick") {
      o.quick = true;
    } else if (a == "--no-peer") {
      o.peers = false;
    } else if (a == "--rounds" && has_value) {
      o.rounds = std::atoi(argv[++i]);
      rounds_set = true;
      if (o.rounds <= 0) return InvalidArgumentError("--rounds must be a positive integer");
    } else if (a == "--workload" && has_value) {
      o.workloads = Split(argv[++i]);
    } else if (a == "--threads" && has_value) {
      o.threads.clear();
      for (const std::string& t : Split(argv[++i])) {
        const int n = std::atoi(t.c_str());
        if (n <= 0) return InvalidArgumentError("--threads: '" + t + "' is not a positive count");
        o.threads.push_back(n);
      }
    } else if (a == "--precision" && has_value) {
      o.precisions = Split(argv[++i]);
      for (const std::string& p : o.precisions) {
        if (p != "f32" && p != "bf16") {
          return InvalidArgumentError("--precision: '" + p + "' is not f32 or bf16");
        }
      }
    } else if (a == "--python" && has_value) {
      o.python = argv[++i];
    } else if (a == "--peer-script" && has_value) {
      o.peer_script = argv[++i];
    } else if (a == "--device" && has_value) {
      o.device = argv[++i];
      StatusOr<kernels::Device> d = kernels::ParseDevice(o.device);
      if (!d.ok()) return InvalidArgumentError("--device: " + d.status().message());
      if (d->is_cuda() && d->index >= kernels::CudaDeviceCount()) {
        return InvalidArgumentError("--device " + o.device + ": this machine has " +
                                    std::to_string(kernels::CudaDeviceCount()) + " CUDA devices");
      }
    } else {
      return InvalidArgumentError("unknown or incomplete argument '" + a + "'\n" + kUsage);
    }
  }
  if (o.quick && !rounds_set) o.rounds = 2;
  return o;
}

int Main(int argc, char** argv) {
  StatusOr<Options> opts = ParseArgs(argc, argv);
  if (!opts.ok()) {
    std::fprintf(stderr, "train_bench: %s\n", opts.status().message().c_str());
    return 2;
  }
  std::vector<Row> rows;
  for (const std::string& name : opts->workloads) {
    StatusOr<Workload> w = MakeWorkload(name, opts->quick);
    if (!w.ok()) {
      std::fprintf(stderr, "train_bench: %s\n", w.status().message().c_str());
      return 2;
    }
    for (const std::string& precision : opts->precisions) {
      for (int threads : opts->threads) {
        StatusOr<Row> row = RunCase(*opts, *w, threads, precision);
        if (!row.ok()) {
          std::fprintf(stderr, "train_bench: %s %s at %d threads failed: %s\n", name.c_str(),
                       precision.c_str(), threads, row.status().ToString().c_str());
          return 1;
        }
        rows.push_back(*row);
        if (!opts->json) {
          std::fprintf(stderr, "done: %s %s, %d thread(s)\n", name.c_str(), precision.c_str(),
                       threads);
        }
      }
    }
  }
  if (opts->json) {
    PrintJson(rows);
  } else {
    PrintTable(rows);
  }
  return 0;
}

}  // namespace
}  // namespace gantry::bench

int main(int argc, char** argv) { return gantry::bench::Main(argc, argv); }
