// CnnModel: conv (padding kernel/2, stride 1) -> relu -> pool 2x2 (max | avg | none) stages,
// then a Linear head on the flattened NCHW features and a LossHead. Parameters
// "convs.{i}.weight" [Cout, Cin, k, k], "convs.{i}.bias", "head.weight", "head.bias".
#pragma once

#include <memory>
#include <vector>

#include "kernels/conv.h"
#include "train/loss_head.h"
#include "train/model.h"

namespace gantry::train {

class CnnModel : public Model {
 public:
  static StatusOr<std::unique_ptr<Model>> Create(const ModelSpec& spec, int batch,
                                                 kernels::Device device);

  Status InitParams(uint64_t seed) override;
  Status Forward(const Batch& batch) override;
  Status Backward(const Batch& batch, float loss_scale = 1.0f) override;
  StatusOr<float> Loss() const override { return ReadScalar(head_.loss()); }
  const kernels::Tensor& Logits() const override { return logits_; }
  int64_t ItemsPerBatch() const override { return batch_; }

 private:
  struct Stage {
    kernels::Tensor conv_out;  // [B, Cout, H', W']
    kernels::Tensor relu_out;  // same shape
    kernels::Tensor pool_out;  // [B, Cout, H'/2, W'/2] (undefined when pool is none)
    kernels::Tensor indices;   // max-pool argmax, i32, pool_out's shape
    int64_t fan_in = 0;
  };
  CnnModel() = default;
  Status Build();
  const kernels::Tensor& StageOutput(size_t i) const {
    return has_pool_ ? stages_[i].pool_out : stages_[i].relu_out;
  }

  kernels::Conv2dOptions conv_opts_;
  kernels::Pool2dOptions pool_opts_;
  bool has_pool_ = true;
  std::vector<Stage> stages_;
  int64_t features_ = 0;             // flattened head input width
  kernels::Tensor logits_;           // [B, classes]
  kernels::Tensor workspace_;        // conv scratch (max over stages)
  kernels::Tensor dbuf_a_, dbuf_b_;  // backward scratch, [max feature map elements] each
  LossHead head_;
};

}  // namespace gantry::train
