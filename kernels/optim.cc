// Public optimizer updates and gradient clipping: option and shape checks, then dispatch.
#include "kernels/optim.h"

#include <cmath>

#include "kernels/dispatch.h"

namespace gantry::kernels {

using internal::CheckDTypes;
using internal::CheckNumel;

namespace {

// The CPU-only extras of an update's options (sum of squares, gradient terms).
Status CheckCpuExtras(const char* op, const Tensor& param, const double* grad_sq_sum,
                      std::span<const float* const> grad_terms, const uint16_t* bf16_copy) {
  if (param.device().is_cuda() &&
      (grad_sq_sum != nullptr || !grad_terms.empty() || bf16_copy != nullptr)) {
    return InvalidArgumentError(std::string(op) +
                                ": grad_sq_sum, grad_terms and bf16_copy are CPU only (use "
                                "L2Norm on CUDA)");
  }
  if (grad_terms.size() > kMaxGradTerms) {
    return InvalidArgumentError(std::string(op) + ": " + std::to_string(grad_terms.size()) +
                                " grad_terms, at most " + std::to_string(kMaxGradTerms));
  }
  for (size_t i = 0; i < grad_terms.size(); ++i) {
    if (grad_terms[i] == nullptr && param.numel() > 0) {
      return InvalidArgumentError(std::string(op) + ": grad_terms[" + std::to_string(i) +
                                  "] is null");
    }
  }
  return OkStatus();
}

}  // namespace

Status SgdUpdate(Tensor& param, const Tensor& grad, Tensor* momentum_buf, const SgdOptions& opts) {
  constexpr const char* kOp = "SgdUpdate";
  GANTRY_RETURN_IF_ERROR(CheckDTypes(
      kOp, DType::kF32, {{"param", &param}, {"grad", &grad}, {"momentum_buf", momentum_buf}}));
  GANTRY_RETURN_IF_ERROR(CheckSameDevice(kOp, {&param, &grad, momentum_buf}));
  GANTRY_RETURN_IF_ERROR(CheckNumel(kOp, "grad", grad, param.numel()));
  if (!(opts.lr >= 0.0f) || !(opts.momentum >= 0.0f) || !(opts.weight_decay >= 0.0f)) {
    return InvalidArgumentError("SgdUpdate: lr, momentum and weight_decay must be >= 0 (got lr=" +
                                std::to_string(opts.lr) + " momentum=" +
                                std::to_string(opts.momentum) + " weight_decay=" +
                                std::to_string(opts.weight_decay) + ")");
  }
  if (opts.momentum > 0.0f) {
    if (momentum_buf == nullptr) {
      return InvalidArgumentError("SgdUpdate: momentum " + std::to_string(opts.momentum) +
                                  " needs 'momentum_buf' (zeroed, same numel as param)");
    }
    GANTRY_RETURN_IF_ERROR(CheckNumel(kOp, "momentum_buf", *momentum_buf, param.numel()));
  } else if (opts.nesterov) {
    return InvalidArgumentError("SgdUpdate: nesterov needs momentum > 0");
  }
  GANTRY_RETURN_IF_ERROR(CheckCpuExtras(kOp, param, opts.grad_sq_sum, opts.grad_terms, opts.bf16_copy));
  GANTRY_KERNELS_DISPATCH(kOp, param.device(), SgdUpdate(param, grad, momentum_buf, opts));
}

Status AdamUpdate(Tensor& param, const Tensor& grad, Tensor& m, Tensor& v,
                  const AdamOptions& opts) {
  constexpr const char* kOp = "AdamUpdate";
  GANTRY_RETURN_IF_ERROR(
      CheckDTypes(kOp, DType::kF32, {{"param", &param}, {"grad", &grad}, {"m", &m}, {"v", &v}}));
  GANTRY_RETURN_IF_ERROR(CheckSameDevice(kOp, {&param, &grad, &m, &v}));
  GANTRY_RETURN_IF_ERROR(CheckNumel(kOp, "grad", grad, param.numel()));
  GANTRY_RETURN_IF_ERROR(CheckNumel(kOp, "m", m, param.numel()));
  GANTRY_RETURN_IF_ERROR(CheckNumel(kOp, "v", v, param.numel()));
  if (opts.step < 1 || !(opts.lr >= 0.0f) || !(opts.beta1 >= 0.0f && opts.beta1 < 1.0f) ||
      !(opts.beta2 >= 0.0f && opts.beta2 < 1.0f) || !(opts.eps >= 0.0f) ||
      !(opts.weight_decay >= 0.0f)) {
    return InvalidArgumentError(
        "AdamUpdate: need step >= 1, lr >= 0, betas in [0, 1), eps >= 0, weight_decay >= 0 "
        "(got step=" + std::to_string(opts.step) + " lr=" + std::to_string(opts.lr) +
        " beta1=" + std::to_string(opts.beta1) + " beta2=" + std::to_string(opts.beta2) +
        " eps=" + std::to_string(opts.eps) + " weight_decay=" +
        std::to_string(opts.weight_decay) + ")");
  }
  GANTRY_RETURN_IF_ERROR(CheckCpuExtras(kOp, param, opts.grad_sq_sum, opts.grad_terms, opts.bf16_copy));
  GANTRY_KERNELS_DISPATCH(kOp, param.device(), AdamUpdate(param, grad, m, v, opts));
}

StatusOr<float> L2Norm(const Tensor& t) {
  constexpr const char* kOp = "L2Norm";
  GANTRY_RETURN_IF_ERROR(CheckDTypes(kOp, DType::kF32, {{"t", &t}}));
  GANTRY_KERNELS_DISPATCH(kOp, t.device(), L2Norm(t));
}

StatusOr<float> ClipGradNorm(Tensor& grad, float max_norm) {
  constexpr const char* kOp = "ClipGradNorm";
  GANTRY_RETURN_IF_ERROR(CheckDTypes(kOp, DType::kF32, {{"grad", &grad}}));
  if (!(max_norm > 0.0f)) {
    return InvalidArgumentError("ClipGradNorm: max_norm must be > 0, got " +
                                std::to_string(max_norm));
  }
  GANTRY_KERNELS_DISPATCH(kOp, grad.device(), ClipGradNorm(grad, max_norm));
}

}  // namespace gantry::kernels
