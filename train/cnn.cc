// CnnModel: forward/backward over preallocated per-stage feature maps.
#include "train/cnn.h"

#include <algorithm>
#include <cmath>

#include "kernels/activation.h"
#include "kernels/linear.h"

namespace gantry::train {

using kernels::Activation;
using kernels::DType;
using kernels::Shape;
using kernels::Tensor;

StatusOr<std::unique_ptr<Model>> CnnModel::Create(const ModelSpec& spec, int batch,
                                                  kernels::Device device) {
  std::unique_ptr<CnnModel> m(new CnnModel());
  m->spec_ = spec;
  m->batch_ = batch;
  m->device_ = device;
  GANTRY_RETURN_IF_ERROR(m->Build());
  return std::unique_ptr<Model>(std::move(m));
}

Status CnnModel::Build() {
  const ModelSpec& s = spec_;
  if (s.input.size() != 3 || s.input[0] <= 0 || s.input[1] <= 0 || s.input[2] <= 0) {
    return InvalidArgumentError("cnn: model.input must be [channels, height, width] > 0");
  }
  if (s.kernel <= 0 || s.classes <= 0) {
    return InvalidArgumentError("cnn: model.kernel and model.classes must be positive");
  }
  if (s.pool != "max" && s.pool != "avg" && s.pool != "none") {
    return InvalidArgumentError("cnn: model.pool '" + s.pool + "': expected max, avg or none");
  }
  GANTRY_ASSIGN_OR_RETURN(LossHead::Kind kind, LossHead::ParseKind(s.loss));
  has_pool_ = s.pool != "none";
  pool_opts_.kind = s.pool == "avg" ? kernels::PoolKind::kAvg : kernels::PoolKind::kMax;
  conv_opts_.padding = s.kernel / 2;
  Shape x = {batch_, s.input[0], s.input[1], s.input[2]};
  int64_t max_elems = kernels::ShapeNumel(x), max_ws = 1;
  for (size_t i = 0; i < s.channels.size(); ++i) {
    const std::string prefix = "convs." + std::to_string(i);
    const Shape w = {s.channels[i], x[1], s.kernel, s.kernel};
    AddParam(prefix + ".weight", w, true);
    AddParam(prefix + ".bias", {s.channels[i]}, false);
    Stage st;
    st.fan_in = x[1] * s.kernel * s.kernel;
    const Shape y = kernels::Conv2dOutputShape(x, w, conv_opts_);
    max_ws = std::max(max_ws, kernels::Conv2dWorkspaceElements(x, w, conv_opts_, device_));
    GANTRY_ASSIGN_OR_RETURN(st.conv_out, Tensor::Empty(y, DType::kF32, device_));
    GANTRY_ASSIGN_OR_RETURN(st.relu_out, Tensor::Empty(y, DType::kF32, device_));
    max_elems = std::max(max_elems, kernels::ShapeNumel(y));
    x = y;
    if (has_pool_) {
      const Shape p = kernels::Pool2dOutputShape(y, pool_opts_);
      if (p[2] <= 0 || p[3] <= 0) {
        return InvalidArgumentError("cnn: feature map " + kernels::ShapeToString(y) +
                                    " after conv " + std::to_string(i) +
                                    " is too small to pool 2x2; use fewer channels entries");
      }
      GANTRY_ASSIGN_OR_RETURN(st.pool_out, Tensor::Empty(p, DType::kF32, device_));
      GANTRY_ASSIGN_OR_RETURN(st.indices, Tensor::Empty(p, DType::kI32, device_));
      x = p;
    }
    stages_.push_back(std::move(st));
  }
  features_ = kernels::ShapeNumel(x) / batch_;
  AddParam("head.weight", {s.classes, features_}, true);
  AddParam("head.bias", {s.classes}, false);
  GANTRY_RETURN_IF_ERROR(AllocateFlatBuffers());
  GANTRY_ASSIGN_OR_RETURN(logits_, Tensor::Empty({batch_, s.classes}, DType::kF32, device_));
  GANTRY_ASSIGN_OR_RETURN(workspace_, Tensor::Empty({max_ws}, DType::kF32, device_));
  max_elems = std::max<int64_t>(max_elems, int64_t(batch_) * s.classes);
  GANTRY_ASSIGN_OR_RETURN(dbuf_a_, Tensor::Empty({max_elems}, DType::kF32, device_));
  GANTRY_ASSIGN_OR_RETURN(dbuf_b_, Tensor::Empty({max_elems}, DType::kF32, device_));
  return head_.Init(kind, logits_.shape(), device_);
}

Status CnnModel::InitParams(uint64_t seed) {
  // torch Conv2d/Linear default: weight and bias ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
  return InitFromHost(seed, [this](const ParamInfo& p, float* v, Rng& rng) {
    int64_t fan_in = features_;
    if (p.name.rfind("convs.", 0) == 0) fan_in = stages_[std::stoi(p.name.substr(6))].fan_in;
    const float bound = 1.0f / std::sqrt(float(fan_in));
    for (int64_t i = 0; i < p.numel; ++i) v[i] = (2.0f * rng.Uniform() - 1.0f) * bound;
  });
}

Status CnnModel::Forward(const Batch& batch) {
  Tensor x = batch.inputs;
  for (size_t i = 0; i < stages_.size(); ++i) {
    Stage& st = stages_[i];
    Tensor w = Param(params_[2 * i]), b = Param(params_[2 * i + 1]);
    GANTRY_RETURN_IF_ERROR(kernels::Conv2dForward(x, w, &b, conv_opts_, st.conv_out, workspace_));
    GANTRY_RETURN_IF_ERROR(kernels::ActivationForward(Activation::kRelu, st.conv_out, st.relu_out));
    if (has_pool_) {
      GANTRY_RETURN_IF_ERROR(
          kernels::Pool2dForward(st.relu_out, pool_opts_, st.pool_out, &st.indices));
    }
    x = StageOutput(i);
  }
  const size_t h = 2 * stages_.size();
  Tensor hw = Param(params_[h]), hb = Param(params_[h + 1]);
  GANTRY_RETURN_IF_ERROR(kernels::LinearForward(x.Reshape({batch_, features_}), hw, &hb, logits_));
  if (batch.targets.raw() == nullptr) return OkStatus();
  return head_.Forward(logits_, batch.targets);
}

Status CnnModel::Backward(const Batch& batch, float loss_scale) {
  if (batch.targets.raw() == nullptr) {
    return InvalidArgumentError("cnn: Backward needs a batch with targets");
  }
  GANTRY_RETURN_IF_ERROR(kernels::Zero(flat_grads_));
  Tensor dlogits = dbuf_b_.View(0, logits_.shape());
  GANTRY_RETURN_IF_ERROR(head_.Backward(logits_, batch.targets, loss_scale, dlogits));
  const size_t n = stages_.size();
  const ParamInfo& hw_info = params_[2 * n];
  Tensor head_in = (n == 0 ? batch.inputs : StageOutput(n - 1)).Reshape({batch_, features_});
  Tensor dfeat = dbuf_a_.View(0, {batch_, features_});
  Tensor hw = Param(hw_info), dhw = Grad(hw_info), dhb = Grad(params_[2 * n + 1]);
  GANTRY_RETURN_IF_ERROR(
      kernels::LinearBackward(head_in, hw, dlogits, n == 0 ? nullptr : &dfeat, dhw, &dhb));
  GradReady(hw_info.offset);
  // dbuf_a_ holds d(stage output); each stage leaves d(its input) in dbuf_a_ again.
  for (size_t i = n; i-- > 0;) {
    Stage& st = stages_[i];
    Tensor drelu = dbuf_b_.View(0, st.relu_out.shape());
    Tensor dout = dbuf_a_.View(0, st.relu_out.shape());  // d(relu_out) when there is no pool
    if (has_pool_) {
      Tensor dpool = dbuf_a_.View(0, st.pool_out.shape());
      GANTRY_RETURN_IF_ERROR(kernels::Pool2dBackward(dpool, &st.indices, pool_opts_, drelu));
      dout = drelu;
    }
    GANTRY_RETURN_IF_ERROR(
        kernels::ActivationBackward(Activation::kRelu, st.conv_out, st.relu_out, dout, drelu));
    const ParamInfo& pw = params_[2 * i];
    Tensor x = i == 0 ? batch.inputs : StageOutput(i - 1);
    Tensor dx = dbuf_a_.View(0, x.shape());
    Tensor w = Param(pw), dw = Grad(pw), db = Grad(params_[2 * i + 1]);
    GANTRY_RETURN_IF_ERROR(kernels::Conv2dBackward(x, w, drelu, conv_opts_, i == 0 ? nullptr : &dx,
                                                   dw, &db, workspace_));
    GradReady(pw.offset);
  }
  return OkStatus();
}

}  // namespace gantry::train
