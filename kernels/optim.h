// Fused optimizer updates and gradient-norm clipping, on flat f32 buffers (any shape; the
// update is elementwise). Formulas match torch.optim exactly (same order of operations) so
// parity tests hold to 1e-4 after many steps.
#pragma once

#include <span>

#include "kernels/tensor.h"

namespace gantry::kernels {

// At most this many arrays in SgdOptions/AdamOptions::grad_terms.
constexpr size_t kMaxGradTerms = 8;

struct SgdOptions {
  float lr = 0.01f;
  float momentum = 0.0f;      // 0 = plain SGD; buffer required when > 0
  float weight_decay = 0.0f;  // L2, added to the gradient (torch semantics)
  bool nesterov = false;
  // CPU only: when set, sum(grad^2) (in double) is added to it in the same pass (the update in
  // backward computes the gradient norm while the gradients are in cache).
  double* grad_sq_sum = nullptr;
  // CPU only: when not empty, the gradient is the sum of these arrays (param.numel() floats
  // each, up to kMaxGradTerms), added left to right in f32, and `grad`'s values are not read
  // (it is still checked for shape). Data parallel on one host passes every rank's gradients
  // in rank order, so each rank sums and updates in one pass with the same bits, and no
  // reduced copy is ever written (train/data_parallel.h, "fused sum").
  std::span<const float* const> grad_terms;
  // CPU only: when set, the updated parameters are also rounded to bf16 (cpu FloatsToBf16, the
  // bf16 GEMMs' own rounding) into bf16_copy[0, param.numel()), block by block while they are
  // in cache: the trainer passes runtime.h's MatmulWeightsBf16Copy so the next step's bf16
  // products cast no weights.
  uint16_t* bf16_copy = nullptr;
};
// torch.optim.SGD with dampening 0: g += wd*p; buf = momentum*buf + g; p -= lr*(nesterov ?
// g + momentum*buf : buf). `momentum_buf` starts at zero (equivalent to torch's first step).
Status SgdUpdate(Tensor& param, const Tensor& grad, Tensor* momentum_buf, const SgdOptions& opts);

struct AdamOptions {
  float lr = 1e-3f;
  float beta1 = 0.9f;
  float beta2 = 0.999f;
  float eps = 1e-8f;
  float weight_decay = 0.0f;
  bool decoupled_weight_decay = false;  // true = AdamW
  int64_t step = 1;                     // 1-based step count for bias correction
  double* grad_sq_sum = nullptr;        // as SgdOptions::grad_sq_sum
  std::span<const float* const> grad_terms;  // as SgdOptions::grad_terms
  uint16_t* bf16_copy = nullptr;             // as SgdOptions::bf16_copy
};
// torch.optim.Adam / AdamW: (AdamW: p *= 1 - lr*wd; Adam: g += wd*p); m = b1*m + (1-b1)*g;
// v = b2*v + (1-b2)*g*g; p -= (lr / (1-b1^t)) * m / (sqrt(v) / sqrt(1-b2^t) + eps).
Status AdamUpdate(Tensor& param, const Tensor& grad, Tensor& m, Tensor& v,
                  const AdamOptions& opts);

// L2 norm of all elements (computed in double on CPU); synchronises on CUDA.
StatusOr<float> L2Norm(const Tensor& t);
// Clips as torch.nn.utils.clip_grad_norm_: if norm > max_norm, grad *= max_norm/(norm+1e-6).
// Returns the norm before clipping.
StatusOr<float> ClipGradNorm(Tensor& grad, float max_norm);

}  // namespace gantry::kernels
