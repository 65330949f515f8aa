// LossHead: the loss at the end of a classifier/regressor (mlp, cnn): cross_entropy (fused
// softmax), mse or hinge, with its scratch preallocated for one logits shape.
#pragma once

#include <string>

#include "base/status.h"
#include "kernels/tensor.h"

namespace gantry::train {

class LossHead {
 public:
  enum class Kind { kCrossEntropy, kMse, kHinge };
  static StatusOr<Kind> ParseKind(const std::string& name);  // cross_entropy | mse | hinge

  // logits shape [rows, classes] on `device`.
  Status Init(Kind kind, const kernels::Shape& logits_shape, kernels::Device device);
  // Writes the mean loss into loss().
  Status Forward(const kernels::Tensor& logits, const kernels::Tensor& targets);
  // dlogits overwritten with d(scale * loss)/d(logits).
  Status Backward(const kernels::Tensor& logits, const kernels::Tensor& targets, float scale,
                  kernels::Tensor& dlogits);
  const kernels::Tensor& loss() const { return loss_; }

 private:
  Kind kind_ = Kind::kCrossEntropy;
  kernels::Tensor probs_;  // cross-entropy softmax, saved for backward
  kernels::Tensor loss_;   // f32 [1]
};

}  // namespace gantry::train
