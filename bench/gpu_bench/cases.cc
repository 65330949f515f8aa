// Our side of bench/gpu_bench: GEMM, LayerNorm fwd+bwd, causal attention fwd+bwd and one
// gpt-tiny transformer block fwd+bwd on cuda:0 through the public kernels API. All buffers are
// allocated once per case; the timed loop only launches kernels, then synchronises.
#include "bench/gpu_bench/cases.h"

#include <algorithm>
#include <chrono>
#include <functional>
#include <random>

#include "kernels/activation.h"
#include "kernels/attention.h"
#include "kernels/linear.h"
#include "kernels/norm.h"
#include "kernels/runtime.h"
#include "kernels/tensor.h"

namespace gantry::bench {
namespace {

using kernels::Device;
using kernels::DType;
using kernels::Shape;
using kernels::Tensor;

const Device kGpu = Device::Cuda(0);

}  // namespace

StatusOr<Tensor> RandomOnGpu(const Shape& shape, uint32_t seed) {
  GANTRY_ASSIGN_OR_RETURN(Tensor host, Tensor::Empty(shape));
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-0.5f, 0.5f);
  for (int64_t i = 0; i < host.numel(); ++i) host.f32()[i] = dist(rng);
  GANTRY_ASSIGN_OR_RETURN(Tensor dev, Tensor::Empty(shape, DType::kF32, kGpu));
  GANTRY_RETURN_IF_ERROR(kernels::Copy(host, dev));
  return dev;
}

StatusOr<double> TimeOnGpu(const std::function<Status()>& step, int iters, int repeats) {
  for (int i = 0; i < 3; ++i) GANTRY_RETURN_IF_ERROR(step());  // warm-up (cuBLAS heuristics)
  GANTRY_RETURN_IF_ERROR(kernels::Synchronize(kGpu));
  std::vector<double> runs;
  for (int r = 0; r < repeats; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < iters; ++i) GANTRY_RETURN_IF_ERROR(step());
    GANTRY_RETURN_IF_ERROR(kernels::Synchronize(kGpu));
    runs.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() /
                   iters);
  }
  std::sort(runs.begin(), runs.end());
  return runs[runs.size() / 2];
}

namespace {

// Shapes shared with torch_peer.py.
constexpr int64_t kGemmN = 4096;
constexpr int64_t kLnRows = 16384, kLnCols = 768;
constexpr int64_t kAttB = 8, kAttT = 1024, kAttC = 768, kAttH = 12;
constexpr int64_t kTinyB = 16, kTinyT = 128, kTinyC = 256, kTinyH = 4, kTinyMlp = 1024;

StatusOr<double> Gemm(int iters, int repeats) {
  GANTRY_ASSIGN_OR_RETURN(Tensor a, RandomOnGpu({kGemmN, kGemmN}, 1));
  GANTRY_ASSIGN_OR_RETURN(Tensor b, RandomOnGpu({kGemmN, kGemmN}, 2));
  GANTRY_ASSIGN_OR_RETURN(Tensor c, Tensor::Empty({kGemmN, kGemmN}, DType::kF32, kGpu));
  return TimeOnGpu([&] { return kernels::Matmul(a, b, c); }, iters, repeats);
}

StatusOr<double> LayerNorm(int iters, int repeats) {
  GANTRY_ASSIGN_OR_RETURN(Tensor x, RandomOnGpu({kLnRows, kLnCols}, 3));
  GANTRY_ASSIGN_OR_RETURN(Tensor g, RandomOnGpu({kLnCols}, 4));
  GANTRY_ASSIGN_OR_RETURN(Tensor b, RandomOnGpu({kLnCols}, 5));
  GANTRY_ASSIGN_OR_RETURN(Tensor dy, RandomOnGpu({kLnRows, kLnCols}, 6));
  GANTRY_ASSIGN_OR_RETURN(Tensor y, Tensor::Empty({kLnRows, kLnCols}, DType::kF32, kGpu));
  GANTRY_ASSIGN_OR_RETURN(Tensor dx, Tensor::Empty({kLnRows, kLnCols}, DType::kF32, kGpu));
  GANTRY_ASSIGN_OR_RETURN(Tensor mean, Tensor::Empty({kLnRows}, DType::kF32, kGpu));
  GANTRY_ASSIGN_OR_RETURN(Tensor rstd, Tensor::Empty({kLnRows}, DType::kF32, kGpu));
  GANTRY_ASSIGN_OR_RETURN(Tensor dg, Tensor::Empty({kLnCols}, DType::kF32, kGpu));
  GANTRY_ASSIGN_OR_RETURN(Tensor db, Tensor::Empty({kLnCols}, DType::kF32, kGpu));
  return TimeOnGpu(
      [&]() -> Status {
        GANTRY_RETURN_IF_ERROR(kernels::LayerNormForward(x, g, b, 1e-5f, y, mean, rstd));
        return kernels::LayerNormBackward(x, g, mean, rstd, dy, dx, dg, db);
      },
      iters, repeats);
}

StatusOr<double> Attention(int iters, int repeats) {
  GANTRY_ASSIGN_OR_RETURN(Tensor qkv, RandomOnGpu({kAttB, kAttT, 3 * kAttC}, 7));
  GANTRY_ASSIGN_OR_RETURN(Tensor dout, RandomOnGpu({kAttB, kAttT, kAttC}, 8));
  GANTRY_ASSIGN_OR_RETURN(Tensor out, Tensor::Empty({kAttB, kAttT, kAttC}, DType::kF32, kGpu));
  GANTRY_ASSIGN_OR_RETURN(Tensor dqkv, Tensor::Empty(qkv.shape(), DType::kF32, kGpu));
  const Shape att_shape{kAttB, kAttH, kAttT, kAttT};
  GANTRY_ASSIGN_OR_RETURN(Tensor att, Tensor::Empty(att_shape, DType::kF32, kGpu));
  GANTRY_ASSIGN_OR_RETURN(Tensor datt, Tensor::Empty(att_shape, DType::kF32, kGpu));
  const int h = static_cast<int>(kAttH);
  return TimeOnGpu(
      [&]() -> Status {
        GANTRY_RETURN_IF_ERROR(kernels::CausalSelfAttentionForward(qkv, h, out, att));
        return kernels::CausalSelfAttentionBackward(qkv, att, dout, h, dqkv, datt);
      },
      iters, repeats);
}

}  // namespace

std::vector<GpuCase> GpuCases() {
  return {
      {"gemm-f32-4096", "tflops", 2.0 * kGemmN * kGemmN * kGemmN, 20},
      {"layernorm-fwd-bwd-16384x768", "ms", 0, 50},
      {"attention-fwd-bwd-b8-t1024-c768-h12", "ms", 0, 10},
      {"gpt-tiny-block-fwd-bwd-b16-t128", "ms", 0, 50},
  };
}

StatusOr<double> RunOurs(const GpuCase& c, int repeats) {
  if (c.name == "gemm-f32-4096") return Gemm(c.iters, repeats);
  if (c.name == "layernorm-fwd-bwd-16384x768") return LayerNorm(c.iters, repeats);
  if (c.name == "attention-fwd-bwd-b8-t1024-c768-h12") return Attention(c.iters, repeats);
  if (c.name == "gpt-tiny-block-fwd-bwd-b16-t128") return RunGptTinyBlock(c.iters, repeats);
  return InvalidArgumentError("gpu_bench: unknown case '" + c.name + "'");
}

}  // namespace gantry::bench
