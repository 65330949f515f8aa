// Model base: parameter registration, flat buffers, batch layouts and the Create factory.
#include "train/model.h"

#include <cstring>

#include "train/cnn.h"
#include "train/gpt.h"
#include "train/mlp.h"

namespace gantry::train {

using kernels::DType;
using kernels::Shape;
using kernels::Tensor;

void Model::AddParam(std::string name, Shape shape, bool decay) {
  ParamInfo p;
  p.name = std::move(name);
  p.numel = kernels::ShapeNumel(shape);
  p.shape = std::move(shape);
  p.offset = params_.empty() ? 0 : params_.back().offset + params_.back().numel;
  p.decay = decay;
  params_.push_back(std::move(p));
}

Status Model::AllocateFlatBuffers() {
  const int64_t n = params_.empty() ? 0 : params_.back().offset + params_.back().numel;
  GANTRY_ASSIGN_OR_RETURN(flat_params_, Tensor::Empty({n}, DType::kF32, device_));
  GANTRY_ASSIGN_OR_RETURN(flat_grads_, Tensor::Empty({n}, DType::kF32, device_));
  return OkStatus();
}

Status Model::AdoptGradientMemory(std::shared_ptr<void> memory) {
  if (!device_.is_cpu()) {
    return InvalidArgumentError("gradient memory can only be adopted by a host (cpu) model");
  }
  if (memory == nullptr) return InvalidArgumentError("AdoptGradientMemory: null memory");
  Tensor moved = Tensor::Wrap(memory.get(), flat_grads_.shape(), DType::kF32, device_);
  std::memcpy(moved.raw(), flat_grads_.raw(), flat_grads_.nbytes());
  flat_grads_ = moved;
  grad_memory_ = std::move(memory);
  return OkStatus();
}

const ParamInfo* Model::FindParam(const std::string& name) const {
  for (const ParamInfo& p : params_) {
    if (p.name == name) return &p;
  }
  return nullptr;
}

StatusOr<BatchLayout> BatchLayoutFor(const ModelSpec& spec, int batch) {
  if (batch <= 0) {
    return InvalidArgumentError("batch size must be positive, got " + std::to_string(batch));
  }
  BatchLayout l;
  const int64_t b = batch;
  if (spec.type == "gpt") {
    l.inputs = {b, spec.context};
    l.input_dtype = DType::kI32;
    l.targets = {b, spec.context};
  } else if (spec.type == "mlp") {
    if (spec.widths.size() < 2) {
      return InvalidArgumentError("model.widths needs at least 2 entries (input and output)");
    }
    l.inputs = {b, spec.widths.front()};
    if (spec.loss == "mse") {
      l.targets = {b, spec.widths.back()};
      l.target_dtype = DType::kF32;
    } else {
      l.targets = {b};
    }
  } else if (spec.type == "cnn") {
    if (spec.input.size() != 3) {
      return InvalidArgumentError("model.input must be [channels, height, width] for cnn");
    }
    l.inputs = {b, spec.input[0], spec.input[1], spec.input[2]};
    l.targets = {b};
  } else {
    return InvalidArgumentError("unknown model.type '" + spec.type + "': expected mlp, cnn or gpt");
  }
  return l;
}

StatusOr<Batch> AllocateBatch(const BatchLayout& layout, kernels::Device device) {
  Batch b;
  GANTRY_ASSIGN_OR_RETURN(b.inputs, Tensor::Empty(layout.inputs, layout.input_dtype, device));
  GANTRY_ASSIGN_OR_RETURN(b.targets, Tensor::Empty(layout.targets, layout.target_dtype, device));
  return b;
}

StatusOr<std::unique_ptr<Model>> Model::Create(const ModelSpec& spec, int batch,
                                               kernels::Device device) {
  if (batch <= 0) {
    return InvalidArgumentError("Model::Create: batch must be positive, got " +
                                std::to_string(batch));
  }
  if (spec.type == "mlp") return MlpModel::Create(spec, batch, device);
  if (spec.type == "cnn") return CnnModel::Create(spec, batch, device);
  if (spec.type == "gpt") return GptModel::Create(spec, batch, device);
  return InvalidArgumentError("unknown model.type '" + spec.type + "': expected mlp, cnn or gpt");
}

}  // namespace gantry::train

namespace gantry::train {

Status Model::InitFromHost(uint64_t seed, const InitFn& fill) {
  Tensor host = flat_params_;
  if (!device_.is_cpu()) {
    GANTRY_ASSIGN_OR_RETURN(host, Tensor::Empty(flat_params_.shape(), DType::kF32));
  }
  for (size_t i = 0; i < params_.size(); ++i) {
    Rng rng(MixSeed(seed, i));
    fill(params_[i], host.f32() + params_[i].offset, rng);
  }
  if (!device_.is_cpu()) GANTRY_RETURN_IF_ERROR(kernels::Copy(host, flat_params_));
  return OkStatus();
}

StatusOr<float> Model::ReadScalar(const Tensor& t) {
  if (t.device().is_cpu()) return t.f32()[0];
  float v = 0;
  Tensor host = Tensor::Wrap(&v, {1});
  GANTRY_RETURN_IF_ERROR(kernels::Copy(t.View(0, {1}), host));
  return v;
}

}  // namespace gantry::train
