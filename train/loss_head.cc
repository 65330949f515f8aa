// LossHead: dispatch to the kernels/loss.h ops.
#include "train/loss_head.h"

#include "kernels/loss.h"

namespace gantry::train {

using kernels::Tensor;

StatusOr<LossHead::Kind> LossHead::ParseKind(const std::string& name) {
  if (name == "cross_entropy" || name.empty()) return Kind::kCrossEntropy;
  if (name == "mse") return Kind::kMse;
  if (name == "hinge") return Kind::kHinge;
  return InvalidArgumentError("unknown model.loss '" + name +
                              "': expected cross_entropy, mse or hinge");
}

Status LossHead::Init(Kind kind, const kernels::Shape& logits_shape, kernels::Device device) {
  kind_ = kind;
  if (kind == Kind::kCrossEntropy) {
    GANTRY_ASSIGN_OR_RETURN(probs_, Tensor::Empty(logits_shape, kernels::DType::kF32, device));
  }
  GANTRY_ASSIGN_OR_RETURN(loss_, Tensor::Empty({1}, kernels::DType::kF32, device));
  return OkStatus();
}

Status LossHead::Forward(const Tensor& logits, const Tensor& targets) {
  switch (kind_) {
    case Kind::kCrossEntropy:
      return kernels::CrossEntropyForward(logits, targets, probs_, loss_);
    case Kind::kMse:
      return kernels::MseForward(logits, targets, loss_);
    case Kind::kHinge:
      return kernels::HingeForward(logits, targets, loss_);
  }
  return InternalError("LossHead: bad kind");
}

Status LossHead::Backward(const Tensor& logits, const Tensor& targets, float scale,
                          Tensor& dlogits) {
  switch (kind_) {
    case Kind::kCrossEntropy:
      return kernels::CrossEntropyBackward(probs_, targets, scale, dlogits);
    case Kind::kMse:
      return kernels::MseBackward(logits, targets, scale, dlogits);
    case Kind::kHinge:
      return kernels::HingeBackward(logits, targets, scale, dlogits);
  }
  return InternalError("LossHead: bad kind");
}

}  // namespace gantry::train
