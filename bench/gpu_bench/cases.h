// GPU benchmark cases, shared by our CUDA backend (cases.cc) and the PyTorch peer
// (torch_peer.py implements the same names and shapes). Each case runs `iters` timed
// iterations after warm-up and returns seconds per iteration (median of `repeats` runs).
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "base/status.h"
#include "kernels/tensor.h"

namespace gantry::bench {

struct GpuCase {
  std::string name;      // also the workload column and the peer's --case argument
  std::string metric;    // "tflops" (higher is better) or "ms" (lower is better)
  double flops = 0;      // per iteration, for tflops
  int iters = 20;
};

// The cases, in the order they are run and printed.
std::vector<GpuCase> GpuCases();

// Runs `c` on cuda:0 with our kernels; returns the median seconds per iteration.
StatusOr<double> RunOurs(const GpuCase& c, int repeats);

// Helpers shared by the case files: uniform [-0.5, 0.5) data on cuda:0, and the median over
// `repeats` of seconds per call of `step` (3 warm-up calls; synchronises around each run).
StatusOr<kernels::Tensor> RandomOnGpu(const kernels::Shape& shape, uint32_t seed);
StatusOr<double> TimeOnGpu(const std::function<Status()>& step, int iters, int repeats);
// One gpt-tiny transformer block forward + backward (block.cc).
StatusOr<double> RunGptTinyBlock(int iters, int repeats);

}  // namespace gantry::bench
