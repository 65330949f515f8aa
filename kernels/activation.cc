// Public activations: name parsing, shared checks, dispatch.
#include "kernels/activation.h"

#include "kernels/dispatch.h"
#include "kernels/linear.h"

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

Status BiasActivationForward(Activation act, Tensor& z, const Tensor& b, Tensor& y) {
  constexpr const char* kOp = "BiasActivationForward";
  GANTRY_RETURN_IF_ERROR(
      internal::CheckDTypes(kOp, DType::kF32, {{"z", &z}, {"b", &b}, {"y", &y}}));
  GANTRY_RETURN_IF_ERROR(CheckSameDevice(kOp, {&z, &b, &y}));
  GANTRY_RETURN_IF_ERROR(CheckShape(kOp, "y", y, z.shape()));
  GANTRY_RETURN_IF_ERROR(CheckShape(kOp, "b", b, {z.dim(-1)}));
  if (y.raw() == z.raw()) {
    return InvalidArgumentError(std::string(kOp) + ": y must not alias z (backward needs z)");
  }
  if (z.device().is_cuda()) {  // CUDA: the two ops one after the other
    GANTRY_RETURN_IF_ERROR(BiasAddForward(z, b));
    return ActivationForward(act, z, y);
  }
  return cpu::BiasActivationForward(act, z, b, y);
}

Status ActivationBiasBackward(Activation act, const Tensor& z, const Tensor& y, const Tensor& dy,
                              Tensor& dx, Tensor& db) {
  constexpr const char* kOp = "ActivationBiasBackward";
  GANTRY_RETURN_IF_ERROR(internal::CheckDTypes(
      kOp, DType::kF32, {{"z", &z}, {"y", &y}, {"dy", &dy}, {"dx", &dx}, {"db", &db}}));
  GANTRY_RETURN_IF_ERROR(CheckSameDevice(kOp, {&z, &y, &dy, &dx, &db}));
  GANTRY_RETURN_IF_ERROR(CheckShape(kOp, "y", y, z.shape()));
  GANTRY_RETURN_IF_ERROR(CheckShape(kOp, "dy", dy, z.shape()));
  GANTRY_RETURN_IF_ERROR(CheckShape(kOp, "dx", dx, z.shape()));
  GANTRY_RETURN_IF_ERROR(CheckShape(kOp, "db", db, {z.dim(-1)}));
  if (z.device().is_cuda()) {
    GANTRY_RETURN_IF_ERROR(ActivationBackward(act, z, y, dy, dx));
    return BiasAddBackward(dx, db);
  }
  return cpu::ActivationBiasBackward(act, z, y, dy, dx, db);
}

}  // namespace gantry::kernels
