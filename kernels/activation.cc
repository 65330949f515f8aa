// Public activations: name parsing, shared checks, dispatch.
#include "kernels/activation.h"

#include "kernels/dispatch.h"

namespace gantry::kernels {

StatusOr<Activation> ParseActivation(const std::string& name) {
  if (name == "relu") return Activation::kRelu;
  if (name == "sigmoid") return Activation::kSigmoid;
  if (name == "tanh") return Activation::kTanh;
  if (name == "gelu") return Activation::kGelu;
  return InvalidArgumentError("unknown activation '" + name +
                              "': use relu, sigmoid, tanh or gelu");
}

const char* ActivationName(Activation act) {
  switch (act) {
    case Activation::kRelu: return "relu";
    case Activation::kSigmoid: return "sigmoid";
    case Activation::kTanh: return "tanh";
    case Activation::kGelu: return "gelu";
  }
  return "unknown";
}

Status ActivationForward(Activation act, const Tensor& x, Tensor& y) {
  constexpr const char* kOp = "ActivationForward";
  GANTRY_RETURN_IF_ERROR(internal::CheckDTypes(kOp, DType::kF32, {{"x", &x}, {"y", &y}}));
  GANTRY_RETURN_IF_ERROR(CheckSameDevice(kOp, {&x, &y}));
  GANTRY_RETURN_IF_ERROR(CheckShape(kOp, "y", y, x.shape()));
  GANTRY_KERNELS_DISPATCH(kOp, x.device(), ActivationForward(act, x, y));
}

Status ActivationBackward(Activation act, const Tensor& x, const Tensor& y, const Tensor& dy,
                          Tensor& dx) {
  constexpr const char* kOp = "ActivationBackward";
  GANTRY_RETURN_IF_ERROR(internal::CheckDTypes(
      kOp, DType::kF32, {{"x", &x}, {"y", &y}, {"dy", &dy}, {"dx", &dx}}));
  GANTRY_RETURN_IF_ERROR(CheckSameDevice(kOp, {&x, &y, &dy, &dx}));
  GANTRY_RETURN_IF_ERROR(CheckShape(kOp, "y", y, x.shape()));
  GANTRY_RETURN_IF_ERROR(CheckShape(kOp, "dy", dy, x.shape()));
  GANTRY_RETURN_IF_ERROR(CheckShape(kOp, "dx", dx, x.shape()));
  GANTRY_KERNELS_DISPATCH(kOp, x.device(), ActivationBackward(act, x, y, dy, dx));
}

}  // namespace gantry::kernels
