// Model: a network with ONE flat parameter buffer and ONE flat gradient buffer; layers hold
// views into them (DESIGN.md). Parameters are laid out in forward (layer) order; gradient
// buckets for data parallelism are taken from the END of the buffer backwards, so backward
// completes them in order. Names follow PyTorch module naming so weights map 1:1 to a
// reference torch model (see docs/models.md). Not thread-safe: one model per rank/thread.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "base/job_spec.h"
#include "base/status.h"
#include "kernels/tensor.h"
#include "train/rng.h"

namespace gantry::train {

struct ParamInfo {
  std::string name;  // e.g. "h.0.attn.c_attn.weight"
  kernels::Shape shape;
  int64_t offset = 0;  // element offset into the flat buffers
  int64_t numel = 0;
  bool decay = true;  // weight decay applies (false for biases and LayerNorm params)
};

// One mini-batch, owned by the data pipeline, on the model's device.
//  gpt: inputs i32 [B, T], targets i32 [B, T]
//  mlp: inputs f32 [B, widths[0]], targets i32 [B] (cross_entropy, hinge) or f32 [B, out] (mse)
//  cnn: inputs f32 [B, C, H, W], targets i32 [B]
// A Batch whose `targets` is an undefined Tensor (no buffer) runs Forward for logits only.
struct Batch {
  kernels::Tensor inputs;
  kernels::Tensor targets;
};

// Shapes and dtypes of one batch for a model spec (data sources allocate Batches from it).
struct BatchLayout {
  kernels::Shape inputs;
  kernels::DType input_dtype = kernels::DType::kF32;
  kernels::Shape targets;
  kernels::DType target_dtype = kernels::DType::kI32;
};
// kInvalidArgument when the spec is not a known/valid model.
StatusOr<BatchLayout> BatchLayoutFor(const ModelSpec& spec, int batch);
// Allocates a zeroed Batch with that layout on `device`.
StatusOr<Batch> AllocateBatch(const BatchLayout& layout, kernels::Device device);

class Model {
 public:
  virtual ~Model() = default;

  // Builds the model for a fixed per-rank batch size; all activations and scratch are
  // preallocated here, so Forward/Backward never allocate.
  static StatusOr<std::unique_ptr<Model>> Create(const ModelSpec& spec, int batch,
                                                 kernels::Device device);

  const std::vector<ParamInfo>& params() const { return params_; }
  int64_t num_params() const { return flat_params_.numel(); }
  kernels::Tensor& flat_params() { return flat_params_; }
  kernels::Tensor& flat_grads() { return flat_grads_; }
  kernels::Tensor Param(const ParamInfo& p) const { return flat_params_.View(p.offset, p.shape); }
  kernels::Tensor Grad(const ParamInfo& p) const { return flat_grads_.View(p.offset, p.shape); }

  // Deterministic initialisation from `seed` (GPT-2 style normal(0, 0.02) for gpt; torch
  // default-like uniform for mlp/cnn), identical on every machine.
  virtual Status InitParams(uint64_t seed) = 0;

  // Computes logits and the mean loss of `batch`.
  virtual Status Forward(const Batch& batch) = 0;
  // Zeroes then fills flat_grads with d(loss_scale * loss)/d(params); must follow its own
  // Forward (it consumes the saved activations, e.g. the softmax). Calls the grad-ready
  // callback (if set) as each trailing range of the gradient buffer becomes final.
  virtual Status Backward(const Batch& batch, float loss_scale = 1.0f) = 0;

  // Mean loss of the last Forward (copied to host; syncs on CUDA).
  virtual StatusOr<float> Loss() const = 0;
  // Logits of the last Forward: gpt [B, T, V]; mlp/cnn [B, classes].
  virtual const kernels::Tensor& Logits() const = 0;
  // Training tokens (gpt) or samples (mlp/cnn) per batch, for throughput figures.
  virtual int64_t ItemsPerBatch() const = 0;

  // Moves the gradient buffer into `memory` (host memory of at least num_params floats, e.g.
  // a communicator's symmetric memory, see Communicator::AllocateSymmetric); the model keeps
  // `memory` alive. Call before anything holds views of flat_grads (optimizers, reducers).
  Status AdoptGradientMemory(std::shared_ptr<void> memory);

  // `begin` is the element offset from which the gradient buffer is now final (up to the end).
  using GradReadyFn = std::function<void(int64_t begin)>;
  void SetGradReadyCallback(GradReadyFn fn) { grad_ready_ = std::move(fn); }

  const ModelSpec& spec() const { return spec_; }
  int batch() const { return batch_; }
  kernels::Device device() const { return device_; }
  // The ParamInfo called `name`, or nullptr.
  const ParamInfo* FindParam(const std::string& name) const;

 protected:
  // Appends a parameter at the next offset (subclasses call this in forward order, then
  // AllocateFlatBuffers once).
  void AddParam(std::string name, kernels::Shape shape, bool decay);
  Status AllocateFlatBuffers();
  // Runs fill(param, values, rng) for every parameter on a host copy of the flat buffer (rng
  // seeded from (seed, parameter index), so init never depends on order), then copies it in.
  using InitFn = std::function<void(const ParamInfo&, float* values, Rng& rng)>;
  Status InitFromHost(uint64_t seed, const InitFn& fill);
  // Copies a one-element f32 tensor (e.g. the loss) to the host.
  static StatusOr<float> ReadScalar(const kernels::Tensor& t);
  void GradReady(int64_t begin) {
    if (grad_ready_) grad_ready_(begin);
  }
  bool has_grad_ready() const { return static_cast<bool>(grad_ready_); }

  ModelSpec spec_;
  int batch_ = 0;
  kernels::Device device_;
  std::vector<ParamInfo> params_;
  kernels::Tensor flat_params_;
  kernels::Tensor flat_grads_;
  std::shared_ptr<void> grad_memory_;  // set by AdoptGradientMemory
  GradReadyFn grad_ready_;
};

}  // namespace gantry::train
