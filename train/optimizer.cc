// Optimizer: segment the flat buffer by decay flag and run the fused kernels on each segment.
#include "train/optimizer.h"

#include <algorithm>
#include <array>
#include <cmath>

#include "kernels/optim.h"
#include "kernels/runtime.h"

namespace gantry::train {

using kernels::Tensor;

double ScheduledLearningRate(const OptimizerSpec& spec, int64_t step, int64_t total_steps) {
  if (step < spec.warmup_steps) return spec.lr * double(step + 1) / double(spec.warmup_steps);
  if (spec.schedule != "cosine") return spec.lr;
  const double span = double(std::max<int64_t>(1, total_steps - spec.warmup_steps));
  const double r = std::clamp(double(step - spec.warmup_steps) / span, 0.0, 1.0);
  const double min_lr = spec.min_lr_ratio * spec.lr;
  return min_lr + 0.5 * (1.0 + std::cos(M_PI * r)) * (spec.lr - min_lr);
}

StatusOr<std::unique_ptr<Optimizer>> Optimizer::Create(const OptimizerSpec& spec, Model& model) {
  const std::string& t = spec.type;
  if (t != "sgd" && t != "momentum" && t != "adam" && t != "adamw") {
    return InvalidArgumentError("unknown optimizer.type '" + t +
                                "': expected sgd, momentum, adam or adamw");
  }
  if (!(spec.lr >= 0) || !(spec.weight_decay >= 0) || !(spec.grad_clip >= 0) ||
      spec.warmup_steps < 0) {
    return InvalidArgumentError(
        "optimizer: lr, weight_decay, grad_clip and warmup_steps must be >= 0");
  }
  if (spec.schedule != "constant" && spec.schedule != "cosine") {
    return InvalidArgumentError("unknown optimizer.schedule '" + spec.schedule +
                                "': expected constant or cosine");
  }
  std::unique_ptr<Optimizer> opt(new Optimizer(spec, model));
  for (const ParamInfo& p : model.params()) {
    if (!opt->segments_.empty() && opt->segments_.back().decay == p.decay) {
      opt->segments_.back().numel += p.numel;
    } else {
      opt->segments_.push_back({p.offset, p.numel, p.decay});
    }
  }
  std::vector<std::string> names;
  if (t == "momentum") names = {"momentum_buffer"};
  if (t == "adam" || t == "adamw") names = {"exp_avg", "exp_avg_sq"};
  for (const std::string& n : names) {
    GANTRY_ASSIGN_OR_RETURN(
        Tensor s, Tensor::Empty(model.flat_params().shape(), kernels::DType::kF32, model.device()));
    opt->state_.emplace_back(n, s);
  }
  return opt;
}

StatusOr<float> Optimizer::ClipGradients() {
  Tensor& g = model_.flat_grads();
  if (spec_.grad_clip > 0) return kernels::ClipGradNorm(g, float(spec_.grad_clip));
  return kernels::L2Norm(g);
}

Status ApplyUpdate(const OptimizerSpec& spec, int64_t step, float lr, bool decay, Tensor& p,
                   const Tensor& g, const OptimizerState& state, int64_t state_offset,
                   double* grad_sq_sum, std::span<const float* const> grad_terms) {
  const std::string& t = spec.type;
  const int64_t n = p.numel();
  const float wd = decay ? float(spec.weight_decay) : 0.0f;
  if (grad_sq_sum != nullptr && !p.device().is_cpu()) {
    // The kernels add up squares only on the CPU: the norm first (the update keeps g).
    GANTRY_ASSIGN_OR_RETURN(const float norm, kernels::L2Norm(g));
    *grad_sq_sum += double(norm) * double(norm);
    grad_sq_sum = nullptr;
  }
  // CPU bf16: the updated parameters' bf16 copy for the next step's products (runtime.h).
  uint16_t* bf16_copy = p.device().is_cpu() ? kernels::MatmulWeightsBf16Copy(p.f32(), n) : nullptr;
  if (t == "sgd" || t == "momentum") {
    kernels::SgdOptions o;
    o.lr = lr;
    o.weight_decay = wd;
    o.grad_sq_sum = grad_sq_sum;
    o.grad_terms = grad_terms;
    o.bf16_copy = bf16_copy;
    Tensor buf;
    if (t == "momentum") {
      o.momentum = float(spec.momentum);
      buf = state[0].second.View(state_offset, {n});
    }
    GANTRY_RETURN_IF_ERROR(kernels::SgdUpdate(p, g, t == "momentum" ? &buf : nullptr, o));
    if (bf16_copy != nullptr) kernels::MatmulWeightsBf16CopyWritten(n);
    return OkStatus();
  }
  kernels::AdamOptions o;
  o.lr = lr;
  o.beta1 = float(spec.beta1);
  o.beta2 = float(spec.beta2);
  o.eps = float(spec.eps);
  o.weight_decay = wd;
  o.decoupled_weight_decay = t == "adamw";
  o.step = step + 1;
  o.grad_sq_sum = grad_sq_sum;
  o.grad_terms = grad_terms;
  o.bf16_copy = bf16_copy;
  Tensor m = state[0].second.View(state_offset, {n});
  Tensor v = state[1].second.View(state_offset, {n});
  GANTRY_RETURN_IF_ERROR(kernels::AdamUpdate(p, g, m, v, o));
  if (bf16_copy != nullptr) kernels::MatmulWeightsBf16CopyWritten(n);
  return OkStatus();
}

Status Optimizer::Step(int64_t step, float lr) {
  return StepRange(step, lr, 0, model_.num_params());
}

Status Optimizer::StepRange(int64_t step, float lr, int64_t begin, int64_t end,
                            double* grad_sq_sum, std::span<const float* const> grad_bases) {
  if (grad_bases.size() > kernels::kMaxGradTerms) {
    return InvalidArgumentError("optimizer: " + std::to_string(grad_bases.size()) +
                                " gradient arrays to sum, at most " +
                                std::to_string(kernels::kMaxGradTerms));
  }
  Tensor& params = model_.flat_params();
  Tensor& grads = model_.flat_grads();
  std::array<const float*, kernels::kMaxGradTerms> terms{};
  for (const Segment& s : segments_) {
    const int64_t b = std::max(begin, s.offset), e = std::min(end, s.offset + s.numel);
    if (b >= e) continue;
    Tensor p = params.View(b, {e - b});
    Tensor g = grads.View(b, {e - b});
    for (size_t t = 0; t < grad_bases.size(); ++t) terms[t] = grad_bases[t] + b;
    GANTRY_RETURN_IF_ERROR(ApplyUpdate(spec_, step, lr, s.decay, p, g, state_, b, grad_sq_sum,
                                       {terms.data(), grad_bases.size()}));
  }
  return OkStatus();
}

Status Optimizer::BeginStepInBackward(int64_t step, float lr) {
  if (spec_.grad_clip > 0) {
    return FailedPreconditionError(
        "optimizer: update in backward needs grad_clip = 0 (clipping needs the global norm "
        "before any update); use ClipGradients + Step");
  }
  in_backward_ = InBackward{step, model_.num_params(), lr, 0.0, OkStatus()};
  model_.SetGradReadyCallback([this](int64_t begin) { OnGradReady(begin); });
  return OkStatus();
}

// [begin, end) just became final: update it (and add its squared norm) while it is in cache.
void Optimizer::OnGradReady(int64_t begin) {
  InBackward& s = in_backward_;
  if (!s.status.ok() || begin >= s.end) return;
  s.status = StepRange(s.step, s.lr, begin, s.end, &s.grad_sq_sum);
  s.end = begin;
}

StatusOr<float> Optimizer::EndStepInBackward() {
  OnGradReady(0);  // whatever backward did not report
  model_.SetGradReadyCallback(nullptr);
  GANTRY_RETURN_IF_ERROR(in_backward_.status);
  return static_cast<float>(std::sqrt(in_backward_.grad_sq_sum));
}

}  // namespace gantry::train
