// MlpModel: forward/backward over preallocated per-layer activations.
#include "train/mlp.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>

#include "kernels/linear.h"
#include "kernels/runtime.h"

namespace gantry::train {

using kernels::DType;
using kernels::Tensor;

namespace {
constexpr int kFirstLayerBlocks = 4;  // first-layer dW row blocks (see below)
constexpr int64_t kFirstLayerBlockMinRows = 64;  // smaller blocks cost more than they hide

// LinearBackward that OVERWRITES dw and db instead of accumulating, so the step needs no
// memset of the gradient buffer first (same GEMMs, same bits as accumulating onto zeros).
// db == nullptr: the bias gradient was already computed (fused with the activation's).
Status LinearBackwardOverwrite(const Tensor& x, const Tensor& w, const Tensor& dy, Tensor* dx,
                               Tensor& dw, Tensor* db) {
  if (dx != nullptr) GANTRY_RETURN_IF_ERROR(kernels::Matmul(dy, w, *dx));  // dy * w
  kernels::GemmOptions dw_opts;
  dw_opts.trans_a = true;
  GANTRY_RETURN_IF_ERROR(kernels::Matmul(dy, x, dw, dw_opts));  // dy^T * x
  if (db == nullptr) return OkStatus();
  GANTRY_RETURN_IF_ERROR(kernels::Zero(*db));
  return kernels::BiasAddBackward(dy, *db);
}

// The first layer's gradients (no dx) are the last of backward: nothing is left to overlap
// their reduction with. On CPU, with a grad-ready listener (data parallel, update in
// backward), dW is computed in `blocks` row blocks from the last one, each announced as soon as
// it is final, so the reduction of the upper rows runs while the lower rows are computed.
// dY's column block is packed into `scratch` (b x rows) so each block is a plain GEMM.
Status FirstLayerBackwardInBlocks(const Tensor& x, const Tensor& dy, Tensor& dw, Tensor* db,
                                  Tensor& scratch, int blocks,
                                  const std::function<void(int64_t row)>& ready) {
  const int64_t b = dy.shape()[0], out = dy.shape()[1];
  if (db != nullptr) {  // the bias lies after W: first
    GANTRY_RETURN_IF_ERROR(kernels::Zero(*db));
    GANTRY_RETURN_IF_ERROR(kernels::BiasAddBackward(dy, *db));
  }
  const int64_t rows = (out + blocks - 1) / blocks;
  kernels::GemmOptions dw_opts;
  dw_opts.trans_a = true;
  for (int64_t o1 = out; o1 > 0;) {
    const int64_t o0 = std::max<int64_t>(0, o1 - rows), n = o1 - o0;
    Tensor packed = scratch.View(0, {b, n});
    const float* src = dy.f32();
    float* dst = packed.f32();
    for (int64_t r = 0; r < b; ++r) std::memcpy(dst + r * n, src + r * out + o0, n * 4);
    Tensor dw_rows = dw.Slice(o0, o1);
    GANTRY_RETURN_IF_ERROR(kernels::Matmul(packed, x, dw_rows, dw_opts));  // packed^T * x
    ready(o0);
    o1 = o0;
  }
  return OkStatus();
}
}  // namespace

StatusOr<std::unique_ptr<Model>> MlpModel::Create(const ModelSpec& spec, int batch,
                                                  kernels::Device device) {
  std::unique_ptr<MlpModel> m(new MlpModel());
  m->spec_ = spec;
  m->batch_ = batch;
  m->device_ = device;
  GANTRY_RETURN_IF_ERROR(m->Build());
  return std::unique_ptr<Model>(std::move(m));
}

Status MlpModel::Build() {
  const std::vector<int>& w = spec_.widths;
  if (w.size() < 2) {
    return InvalidArgumentError("mlp: model.widths needs at least 2 entries (input and output)");
  }
  for (size_t i = 0; i < w.size(); ++i) {
    if (w[i] <= 0) {
      return InvalidArgumentError("mlp: model.widths[" + std::to_string(i) +
                                  "] must be positive, got " + std::to_string(w[i]));
    }
  }
  GANTRY_ASSIGN_OR_RETURN(act_, kernels::ParseActivation(spec_.activation));
  GANTRY_ASSIGN_OR_RETURN(LossHead::Kind kind, LossHead::ParseKind(spec_.loss));
  const int layers = int(w.size()) - 1;
  for (int i = 0; i < layers; ++i) {
    const std::string prefix = "layers." + std::to_string(i);
    AddParam(prefix + ".weight", {w[i + 1], w[i]}, /*decay=*/true);
    AddParam(prefix + ".bias", {w[i + 1]}, /*decay=*/false);
  }
  GANTRY_RETURN_IF_ERROR(AllocateFlatBuffers());
  const int64_t b = batch_;
  for (int i = 0; i < layers; ++i) {
    GANTRY_ASSIGN_OR_RETURN(Tensor z, Tensor::Empty({b, w[i + 1]}, DType::kF32, device_));
    z_.push_back(z);
    if (i + 1 < layers) {
      GANTRY_ASSIGN_OR_RETURN(Tensor a, Tensor::Empty({b, w[i + 1]}, DType::kF32, device_));
      a_.push_back(a);
    }
  }
  const int64_t max_w = *std::max_element(w.begin(), w.end());
  GANTRY_ASSIGN_OR_RETURN(dz_buf_, Tensor::Empty({b * max_w}, DType::kF32, device_));
  GANTRY_ASSIGN_OR_RETURN(da_buf_, Tensor::Empty({b * max_w}, DType::kF32, device_));
  return head_.Init(kind, z_.back().shape(), device_);
}

Status MlpModel::InitParams(uint64_t seed) {
  // torch.nn.Linear default: weight and bias ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
  return InitFromHost(seed, [this](const ParamInfo& p, float* v, Rng& rng) {
    const int layer = std::stoi(p.name.substr(7));
    const float bound = 1.0f / std::sqrt(float(spec_.widths[layer]));
    for (int64_t i = 0; i < p.numel; ++i) v[i] = (2.0f * rng.Uniform() - 1.0f) * bound;
  });
}

Status MlpModel::Forward(const Batch& batch) {
  const int layers = int(z_.size());
  const int64_t b = batch_;
  Tensor x = batch.inputs.Reshape({b, spec_.widths[0]});
  for (int i = 0; i < layers; ++i) {
    Tensor wt = Param(params_[2 * i]), bias = Param(params_[2 * i + 1]);
    if (i + 1 == layers) {
      GANTRY_RETURN_IF_ERROR(kernels::LinearForward(x, wt, &bias, z_[i]));
      break;
    }
    // hidden layer: the bias add rides on the activation's pass over z
    GANTRY_RETURN_IF_ERROR(kernels::LinearForward(x, wt, nullptr, z_[i]));
    GANTRY_RETURN_IF_ERROR(kernels::BiasActivationForward(act_, z_[i], bias, a_[i]));
    x = a_[i];
  }
  if (batch.targets.raw() == nullptr) return OkStatus();
  return head_.Forward(z_.back(), batch.targets);
}

Status MlpModel::Backward(const Batch& batch, float loss_scale) {
  if (batch.targets.raw() == nullptr) {
    return InvalidArgumentError("mlp: Backward needs a batch with targets");
  }
  const int layers = int(z_.size());  // every gradient is overwritten: no Zero(flat_grads_)
  const int64_t b = batch_;
  const std::vector<int>& w = spec_.widths;
  Tensor dz = dz_buf_.View(0, {b, w.back()});
  GANTRY_RETURN_IF_ERROR(head_.Backward(z_.back(), batch.targets, loss_scale, dz));
  // A hidden layer's bias gradient comes out of the activation's backward pass (fused), one
  // layer ahead: only the last layer's is summed by LinearBackwardOverwrite.
  for (int i = layers - 1; i >= 0; --i) {
    const ParamInfo& pw = params_[2 * i];
    Tensor x = i == 0 ? batch.inputs.Reshape({b, w[0]}) : a_[i - 1];
    Tensor wt = Param(pw), dw = Grad(pw);
    Tensor db_last = Grad(params_[2 * i + 1]);
    Tensor* db = i + 1 == layers ? &db_last : nullptr;
    Tensor da = da_buf_.View(0, {b, w[i]});
    // One thread only: with more, the whole dW GEMM is split across the threads, which a
    // block of 128 rows is too small for (mlp-mnist at 2 threads: 62k -> 71k samples/s).
    const bool blocked = i == 0 && device_.is_cpu() && has_grad_ready() &&
                         kernels::NumThreads() == 1 &&
                         w[1] >= kFirstLayerBlocks * kFirstLayerBlockMinRows;
    if (blocked) {
      const int64_t in = w[0];
      GANTRY_RETURN_IF_ERROR(FirstLayerBackwardInBlocks(
          x, dz, dw, db, da_buf_, kFirstLayerBlocks,
          [&](int64_t row) { GradReady(pw.offset + row * in); }));
      continue;
    }
    GANTRY_RETURN_IF_ERROR(LinearBackwardOverwrite(x, wt, dz, i == 0 ? nullptr : &da, dw, db));
    GradReady(pw.offset);
    if (i > 0) {
      dz = dz_buf_.View(0, {b, w[i]});
      Tensor db_prev = Grad(params_[2 * (i - 1) + 1]);
      GANTRY_RETURN_IF_ERROR(kernels::Zero(db_prev));
      GANTRY_RETURN_IF_ERROR(
          kernels::ActivationBiasBackward(act_, z_[i - 1], a_[i - 1], da, dz, db_prev));
    }
  }
  return OkStatus();
}

}  // namespace gantry::train
