// Fused optimizer updates (SGD with momentum/nesterov, Adam/AdamW) and the gradient L2 norm on
// CUDA. Updates are one elementwise pass each; the norm is a deterministic double reduction and
// the one place here that synchronises (it returns a host float).
#include <cuda_runtime.h>

#include <cmath>
#include <string>

#include "kernels/cuda/check.h"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/context.h"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/reduce.cuh"

namespace gantry::kernels::cuda {
namespace {

Status CheckLike(const char* op, const OpEnv& env, const Tensor& param, const char* name,
                 const Tensor& t) {
  GANTRY_RETURN_IF_ERROR(CheckOperand(op, name, t, env));
  if (t.numel() != param.numel()) {
    return InvalidArgumentError(std::string(op) + ": " + name + " " + t.ToString() +
                                " must have as many elements as param " + param.ToString());
  }
  return OkStatus();
}

}  // namespace

Status SgdUpdate(Tensor& param, const Tensor& grad, Tensor* momentum_buf,
                 const SgdOptions& opts) {
  constexpr const char* kOp = "SgdUpdate";
  GANTRY_ASSIGN_OR_RETURN(OpEnv env, BeginOp(kOp, param));
  GANTRY_RETURN_IF_ERROR(CheckLike(kOp, env, param, "param", param));
  GANTRY_RETURN_IF_ERROR(CheckLike(kOp, env, param, "grad", grad));
  float* p = param.f32();
  const float* g = grad.f32();
  const float lr = opts.lr, wd = opts.weight_decay, mom = opts.momentum;
  if (mom == 0.0f) {
    // No decay term when wd is 0, as on the CPU: 0 * inf would turn an inf parameter to NaN.
    return LaunchElementwise(param.numel(), env.stream, [=] __device__(int64_t i) {
      p[i] -= lr * (wd != 0.0f ? g[i] + wd * p[i] : g[i]);
    });
  }
  if (momentum_buf == nullptr) {
    return InvalidArgumentError("SgdUpdate: momentum " + std::to_string(mom) +
                                " needs a momentum buffer (got null)");
  }
  GANTRY_RETURN_IF_ERROR(CheckLike(kOp, env, param, "momentum_buf", *momentum_buf));
  float* buf = momentum_buf->f32();
  const bool nesterov = opts.nesterov;
  return LaunchElementwise(param.numel(), env.stream, [=] __device__(int64_t i) {
    const float gi = wd != 0.0f ? g[i] + wd * p[i] : g[i];
    const float b = mom * buf[i] + gi;
    buf[i] = b;
    p[i] -= lr * (nesterov ? gi + mom * b : b);
  });
}

Status AdamUpdate(Tensor& param, const Tensor& grad, Tensor& m, Tensor& v,
                  const AdamOptions& opts) {
  constexpr const char* kOp = "AdamUpdate";
  GANTRY_ASSIGN_OR_RETURN(OpEnv env, BeginOp(kOp, param));
  GANTRY_RETURN_IF_ERROR(CheckLike(kOp, env, param, "param", param));
  GANTRY_RETURN_IF_ERROR(CheckLike(kOp, env, param, "grad", grad));
  GANTRY_RETURN_IF_ERROR(CheckLike(kOp, env, param, "m", m));
  GANTRY_RETURN_IF_ERROR(CheckLike(kOp, env, param, "v", v));
  if (opts.step < 1) {
    return InvalidArgumentError("AdamUpdate: step " + std::to_string(opts.step) +
                                " must be >= 1 (1-based, for bias correction)");
  }
  // Bias corrections in double on the host, as torch computes them in Python floats.
  const double bc1 = 1.0 - std::pow(static_cast<double>(opts.beta1), static_cast<double>(opts.step));
  const double bc2 = 1.0 - std::pow(static_cast<double>(opts.beta2), static_cast<double>(opts.step));
  const float step_size = static_cast<float>(opts.lr / bc1);
  const float bc2_sqrt = static_cast<float>(std::sqrt(bc2));
  const float b1 = opts.beta1, b2 = opts.beta2, eps = opts.eps;
  const float wd = opts.weight_decay;
  // In double, then rounded once, as the CPU computes it.
  const float decay = opts.decoupled_weight_decay
                          ? static_cast<float>(1.0 - double(opts.lr) * double(wd))
                          : 1.0f;
  const float l2 = opts.decoupled_weight_decay ? 0.0f : wd;
  float* p = param.f32();
  const float* g = grad.f32();
  float* pm = m.f32();
  float* pv = v.f32();
  return LaunchElementwise(param.numel(), env.stream, [=] __device__(int64_t i) {
    const float pi = p[i] * decay;
    const float gi = l2 != 0.0f ? g[i] + l2 * pi : g[i];
    const float mi = b1 * pm[i] + (1.0f - b1) * gi;
    const float vi = b2 * pv[i] + (1.0f - b2) * gi * gi;
    pm[i] = mi;
    pv[i] = vi;
    p[i] = pi - step_size * mi / (sqrtf(vi) / bc2_sqrt + eps);
  });
}

StatusOr<float> L2Norm(const Tensor& t) {
  constexpr const char* kOp = "L2Norm";
  GANTRY_ASSIGN_OR_RETURN(OpEnv env, BeginOp(kOp, t));
  GANTRY_RETURN_IF_ERROR(CheckOperand(kOp, "t", t, env));
  // Partials at the start of the scratch, the double result right after them.
  const size_t partial_bytes = kReduceMaxBlocks * sizeof(double);
  GANTRY_ASSIGN_OR_RETURN(void* scratch, Scratch(env.ctx, partial_bytes + sizeof(double)));
  double* result = reinterpret_cast<double*>(static_cast<char*>(scratch) + partial_bytes);
  const float* p = t.f32();
  GANTRY_RETURN_IF_ERROR(SumReduce<double>(env, t.numel(), 1.0, result, [=] __device__(int64_t i) {
    const double x = p[i];
    return x * x;
  }));
  GANTRY_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(env.ctx->host_result, result, sizeof(double),
                                              cudaMemcpyDeviceToHost, env.stream));
  GANTRY_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(env.stream));
  return static_cast<float>(std::sqrt(env.ctx->host_result[0]));
}

StatusOr<float> ClipGradNorm(Tensor& grad, float max_norm) {
  GANTRY_ASSIGN_OR_RETURN(float norm, cuda::L2Norm(grad));
  if (norm > max_norm) {
    GANTRY_RETURN_IF_ERROR(cuda::Scale(grad, max_norm / (norm + 1e-6f)));
  }
  return norm;
}

}  // namespace gantry::kernels::cuda
