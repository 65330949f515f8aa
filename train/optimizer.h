// Optimizer: sgd | momentum | adam | adamw over a Model's flat parameter buffer, with the LR
// schedule (linear warmup, then constant or cosine) and global-norm gradient clipping.
// Weight decay follows the torch param-group habit: only ParamInfo::decay params (weights of
// rank >= 2, embeddings included) decay; biases and LayerNorm params never do (docs/models.md).
// State (momentum buffer, or Adam's exp_avg/exp_avg_sq) is flat, parallel to the parameters.
#pragma once

#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "base/job_spec.h"
#include "base/status.h"
#include "kernels/tensor.h"
#include "train/model.h"

namespace gantry::train {

// lr at 0-based `step` of `total_steps`: warmup: lr * (step + 1) / warmup_steps for
// step < warmup_steps; then "constant": lr, or "cosine": min + 0.5 * (1 + cos(pi * r)) *
// (lr - min) with r = (step - warmup) / max(1, total - warmup) clamped to [0, 1] and
// min = min_lr_ratio * lr.
double ScheduledLearningRate(const OptimizerSpec& spec, int64_t step, int64_t total_steps);

// Flat state tensors by name ("momentum_buffer", or "exp_avg" then "exp_avg_sq").
using OptimizerState = std::vector<std::pair<std::string, kernels::Tensor>>;

// One fused update of `p` (a run of parameters sharing the decay flag) with gradient `g`;
// the state slice starts `state_offset` elements into each state tensor. Shared by the
// replicated Optimizer and the ZeRO-1 ShardedOptimizer. With `grad_sq_sum` (CPU), sum(g^2)
// is added to it in the same pass. With `grad_terms` (CPU; each pointing at the gradient of
// p's first element), the gradient is their sum, left to right (kernels::SgdOptions).
Status ApplyUpdate(const OptimizerSpec& spec, int64_t step, float lr, bool decay,
                   kernels::Tensor& p, const kernels::Tensor& g, const OptimizerState& state,
                   int64_t state_offset, double* grad_sq_sum = nullptr,
                   std::span<const float* const> grad_terms = {});

class Optimizer {
 public:
  // kInvalidArgument for an unknown type or bad hyper-parameters. Allocates the state on the
  // model's device. `model` must outlive the optimizer.
  static StatusOr<std::unique_ptr<Optimizer>> Create(const OptimizerSpec& spec, Model& model);

  const OptimizerSpec& spec() const { return spec_; }
  // Global L2 norm of the gradients; clips them in place when spec.grad_clip > 0.
  StatusOr<float> ClipGradients();
  // Applies update number `step` (0-based; Adam bias correction uses step + 1) at rate `lr`.
  Status Step(int64_t step, float lr);
  // Update of parameters [begin, end) only; Step == StepRange over [0, num_params) and any
  // split of it gives the same bits (the kernels are elementwise with fixed roundings).
  // With `grad_bases` (CPU, at most kernels::kMaxGradTerms flat gradient arrays of
  // num_params floats, e.g. every rank's in rank order) the gradient is their sum, left to
  // right, instead of the model's flat_grads().
  Status StepRange(int64_t step, float lr, int64_t begin, int64_t end,
                   double* grad_sq_sum = nullptr,
                   std::span<const float* const> grad_bases = {});
  // Update in backward (one process, no clipping): Begin installs the model's grad-ready
  // callback, which updates each range as soon as backward reports it final (its gradients
  // still in cache); End removes it, updates what was not reported, and returns the global
  // gradient norm (or the first update error). Same parameters, bit for bit, as Backward +
  // ClipGradients + Step. kFailedPrecondition when grad_clip > 0 (needs the norm first).
  Status BeginStepInBackward(int64_t step, float lr);
  StatusOr<float> EndStepInBackward();
  // After a failed Backward: removes the callback without updating the rest.
  void CancelStepInBackward() { model_.SetGradReadyCallback(nullptr); }
  // Flat state tensors by name ("momentum_buffer", "exp_avg", "exp_avg_sq"); empty for sgd.
  const OptimizerState& state() const { return state_; }

 private:
  struct Segment {  // a run of adjacent params sharing the decay flag
    int64_t offset, numel;
    bool decay;
  };
  Optimizer(const OptimizerSpec& spec, Model& model) : spec_(spec), model_(model) {}

  OptimizerSpec spec_;
  Model& model_;
  void OnGradReady(int64_t begin);

  std::vector<Segment> segments_;
  OptimizerState state_;
  struct InBackward {  // the step being applied inside backward
    int64_t step = 0, end = 0;  // [end, num_params) is updated
    float lr = 0;
    double grad_sq_sum = 0;
    Status status;
  } in_backward_;
};

}  // namespace gantry::train
