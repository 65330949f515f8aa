// MlpModel: a stack of Linear layers with an activation between them (none after the last),
// then a LossHead. Parameters "layers.{i}.weight" [out, in], "layers.{i}.bias" [out], as a
// torch nn.ModuleList named `layers` (docs/models.md).
#pragma once

#include <memory>
#include <vector>

#include "kernels/activation.h"
#include "train/loss_head.h"
#include "train/model.h"

namespace gantry::train {

class MlpModel : public Model {
 public:
  static StatusOr<std::unique_ptr<Model>> Create(const ModelSpec& spec, int batch,
                                                 kernels::Device device);

  Status InitParams(uint64_t seed) override;
  Status Forward(const Batch& batch) override;
  Status Backward(const Batch& batch, float loss_scale = 1.0f) override;
  StatusOr<float> Loss() const override { return ReadScalar(head_.loss()); }
  const kernels::Tensor& Logits() const override { return z_.back(); }
  int64_t ItemsPerBatch() const override { return batch_; }

 private:
  MlpModel() = default;
  Status Build();

  kernels::Activation act_ = kernels::Activation::kRelu;
  std::vector<kernels::Tensor> z_;   // pre-activation outputs [B, widths[i+1]]; z_.back() = logits
  std::vector<kernels::Tensor> a_;   // activations [B, widths[i+1]] for all but the last layer
  kernels::Tensor dz_buf_, da_buf_;  // backward scratch, [B * max width] each
  LossHead head_;
};

}  // namespace gantry::train
