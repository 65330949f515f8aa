// gpu_bench: our CUDA kernels vs PyTorch CUDA on the same GPU, in the same run, case by case
// (ours, then the peer: bench/gpu_bench/torch_peer.py). Prints a table, or --json rows in the
// format of docs/benchmarks (ratio > 1 means we win). Exits 0 with a message without a GPU.
// Usage: gpu_bench [--json] [--repeats N] [--python PATH] [--no-peer] [--case NAME]
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "bench/gpu_bench/cases.h"
#include "gantry_config.h"
#include "kernels/runtime.h"

namespace gantry::bench {
namespace {

struct Flags {
  bool json = false, peer = true;
  int repeats = 5;
  std::string python, only_case;
};

std::optional<Flags> ParseFlags(int argc, char** argv) {
  Flags f;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const bool has_value = i + 1 < argc;
    if (a == "--json") {
      f.json = true;
    } else if (a == "--no-peer") {
      f.peer = false;
    } else if (a == "--repeats" && has_value) {
      f.repeats = std::atoi(argv[++i]);
    } else if (a == "--python" && has_value) {
      f.python = argv[++i];
    } else if (a == "--case" && has_value) {
      f.only_case = argv[++i];
    } else {
      std::fprintf(stderr, "gpu_bench: unknown argument '%s'\nusage: gpu_bench [--json] "
                   "[--repeats N] [--python PATH] [--no-peer] [--case NAME]\n", a.c_str());
      return std::nullopt;
    }
  }
  if (f.repeats < 1) f.repeats = 1;
  return f;
}

std::string Run(const std::string& cmd) {
  std::string out;
  FILE* p = popen(cmd.c_str(), "r");
  if (p == nullptr) return out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), p)) > 0) out.append(buf, n);
  if (pclose(p) != 0) out.clear();
  return out;
}

// First interpreter (--python, $GANTRY_PYTHON, python3, /usr/bin/python3) whose torch sees a GPU.
std::string FindPython(const std::string& flag) {
  std::vector<std::string> candidates;
  if (!flag.empty()) candidates.push_back(flag);
  if (const char* env = std::getenv("GANTRY_PYTHON")) candidates.push_back(env);
  candidates.push_back("python3");
  candidates.push_back("/usr/bin/python3");
  for (const std::string& py : candidates) {
    const std::string probe = py + " -c 'import torch,sys; sys.exit(0 if torch.cuda.is_available() "
                                   "else 1)' >/dev/null 2>&1 && echo ok";
    if (Run(probe).find("ok") != std::string::npos) return py;
  }
  return "";
}

// Runs the peer for one case; returns seconds per iteration (parsed from its JSON line).
std::optional<double> RunPeer(const std::string& python, const GpuCase& c, int repeats) {
  const std::string cmd = python + " " GANTRY_SOURCE_DIR "/bench/gpu_bench/torch_peer.py --case " +
                          c.name + " --iters " + std::to_string(c.iters) + " --repeats " +
                          std::to_string(repeats);
  const std::string out = Run(cmd);
  const size_t at = out.find("\"seconds\":");
  if (at == std::string::npos) return std::nullopt;
  return std::strtod(out.c_str() + at + 10, nullptr);
}

double Metric(const GpuCase& c, double seconds) {
  return c.metric == "tflops" ? c.flops / seconds / 1e12 : seconds * 1e3;
}

void Report(const Flags& f, const GpuCase& c, double ours, std::optional<double> peer) {
  const double o = Metric(c, ours);
  std::optional<double> p, ratio;
  if (peer && *peer > 0) {
    p = Metric(c, *peer);
    ratio = c.metric == "tflops" ? o / *p : *p / o;  // > 1: we win
  }
  if (f.json) {
    std::printf("{\"bench\": \"gpu\", \"workload\": \"%s\", \"metric\": \"%s\", \"ours\": %.4f",
                c.name.c_str(), c.metric.c_str(), o);
    if (p) {
      std::printf(", \"peer\": \"pytorch-cuda\", \"peer_value\": %.4f, \"ratio\": %.3f", *p, *ratio);
    }
    std::printf(", \"target\": 1.0}\n");
  } else if (p) {
    std::printf("%-40s %-7s %12.3f %12.3f %8.2fx\n", c.name.c_str(), c.metric.c_str(), o, *p, *ratio);
  } else {
    std::printf("%-40s %-7s %12.3f %12s %9s\n", c.name.c_str(), c.metric.c_str(), o, "n/a", "-");
  }
  std::fflush(stdout);
}

int Main(int argc, char** argv) {
  std::optional<Flags> flags = ParseFlags(argc, argv);
  if (!flags) return 2;
  if (kernels::CudaDeviceCount() == 0) {
    std::printf("gpu_bench: no CUDA device (built with CUDA: %s); nothing to measure\n",
                kernels::BuiltWithCuda() ? "yes" : "no");
    return 0;
  }
  std::string python;
  if (flags->peer) {
    python = FindPython(flags->python);
    if (python.empty()) {
      std::fprintf(stderr, "gpu_bench: no python with CUDA-enabled torch found (tried --python, "
                           "$GANTRY_PYTHON, python3, /usr/bin/python3); peer column is n/a\n");
    }
  }
  if (!flags->json) {
    std::printf("%-40s %-7s %12s %12s %9s\n", "case (cuda:0, f32)", "metric", "gantry",
                "pytorch", "ratio");
  }
  int failures = 0;
  for (const GpuCase& c : GpuCases()) {
    if (!flags->only_case.empty() && c.name != flags->only_case) continue;
    StatusOr<double> ours = RunOurs(c, flags->repeats);
    if (!ours.ok()) {
      std::fprintf(stderr, "gpu_bench: %s failed: %s\n", c.name.c_str(),
                   ours.status().ToString().c_str());
      ++failures;
      continue;
    }
    std::optional<double> peer;
    if (!python.empty()) {
      peer = RunPeer(python, c, flags->repeats);
      if (!peer) std::fprintf(stderr, "gpu_bench: peer failed for %s\n", c.name.c_str());
    }
    Report(*flags, c, *ours, peer);
  }
  return failures == 0 ? 0 : 1;
}

}  // namespace
}  // namespace gantry::bench

int main(int argc, char** argv) { return gantry::bench::Main(argc, argv); }
