// Elementwise activations (ReLU, sigmoid, tanh, GELU-tanh) forward and backward on CUDA.
// Formulas match kernels/cpu (torch semantics: relu'(0) = 0, GELU tanh approximation).
#include <cuda_runtime.h>

#include <string>

#include "kernels/cuda/check.h"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/context.h"
#include "kernels/cuda/cuda_ops.h"

namespace gantry::kernels::cuda {
namespace {

constexpr float kGeluC = 0.7978845608028654f;  // sqrt(2 / pi)
constexpr float kGeluA = 0.044715f;

__device__ __forceinline__ float GeluForward(float x) {
  const float u = kGeluC * (x + kGeluA * x * x * x);
  return 0.5f * x * (1.0f + tanhf(u));
}
__device__ __forceinline__ float GeluGrad(float x) {
  const float u = kGeluC * (x + kGeluA * x * x * x);
  const float t = tanhf(u);
  const float du = kGeluC * (1.0f + 3.0f * kGeluA * x * x);
  return 0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * du;
}

Status CheckSame(const char* op, const OpEnv& env, const Tensor& ref,
                 std::initializer_list<std::pair<const char*, const Tensor*>> ts) {
  for (const auto& [name, t] : ts) {
    GANTRY_RETURN_IF_ERROR(CheckOperand(op, name, *t, env));
    if (t->numel() != ref.numel()) {
      return InvalidArgumentError(std::string(op) + ": " + name + " " + t->ToString() +
                                  " must have as many elements as " + ref.ToString());
    }
  }
  return OkStatus();
}

}  // namespace

Status ActivationForward(Activation act, const Tensor& x, Tensor& y) {
  constexpr const char* kOp = "ActivationForward";
  GANTRY_ASSIGN_OR_RETURN(OpEnv env, BeginOp(kOp, x));
  GANTRY_RETURN_IF_ERROR(CheckSame(kOp, env, x, {{"x", &x}, {"y", &y}}));
  const float* px = x.f32();
  float* py = y.f32();
  const int64_t n = x.numel();
  switch (act) {
    case Activation::kRelu:
      return LaunchElementwise(n, env.stream, [=] __device__(int64_t i) {
        py[i] = px[i] > 0.0f ? px[i] : 0.0f;
      });
    case Activation::kSigmoid:
      return LaunchElementwise(n, env.stream, [=] __device__(int64_t i) {
        py[i] = 1.0f / (1.0f + expf(-px[i]));
      });
    case Activation::kTanh:
      return LaunchElementwise(n, env.stream,
                               [=] __device__(int64_t i) { py[i] = tanhf(px[i]); });
    case Activation::kGelu:
      return LaunchElementwise(n, env.stream,
                               [=] __device__(int64_t i) { py[i] = GeluForward(px[i]); });
  }
  return InvalidArgumentError("ActivationForward: unknown activation " +
                              std::to_string(static_cast<int>(act)));
}

Status ActivationBackward(Activation act, const Tensor& x, const Tensor& y, const Tensor& dy,
                          Tensor& dx) {
  constexpr const char* kOp = "ActivationBackward";
  GANTRY_ASSIGN_OR_RETURN(OpEnv env, BeginOp(kOp, dy));
  GANTRY_RETURN_IF_ERROR(CheckSame(kOp, env, dy, {{"x", &x}, {"y", &y}, {"dy", &dy}, {"dx", &dx}}));
  const float* px = x.f32();
  const float* py = y.f32();
  const float* pdy = dy.f32();
  float* pdx = dx.f32();
  const int64_t n = dy.numel();
  switch (act) {
    case Activation::kRelu:
      return LaunchElementwise(n, env.stream, [=] __device__(int64_t i) {
        pdx[i] = px[i] > 0.0f ? pdy[i] : 0.0f;
      });
    case Activation::kSigmoid:
      return LaunchElementwise(n, env.stream, [=] __device__(int64_t i) {
        const float s = py[i];
        pdx[i] = pdy[i] * s * (1.0f - s);
      });
    case Activation::kTanh:
      return LaunchElementwise(n, env.stream, [=] __device__(int64_t i) {
        const float t = py[i];
        pdx[i] = pdy[i] * (1.0f - t * t);
      });
    case Activation::kGelu:
      return LaunchElementwise(n, env.stream,
                               [=] __device__(int64_t i) { pdx[i] = pdy[i] * GeluGrad(px[i]); });
  }
  return InvalidArgumentError("ActivationBackward: unknown activation " +
                              std::to_string(static_cast<int>(act)));
}

}  // namespace gantry::kernels::cuda
