// Public softmax and LayerNorm: shared checks, then dispatch.
#include "kernels/norm.h"

#include "kernels/dispatch.h"

namespace gantry::kernels {

using internal::CheckDTypes;
using internal::CheckHasLastDim;
using internal::CheckNumel;

Status SoftmaxForward(const Tensor& x, Tensor& y) {
  constexpr const char* kOp = "SoftmaxForward";
  GANTRY_RETURN_IF_ERROR(CheckDTypes(kOp, DType::kF32, {{"x", &x}, {"y", &y}}));
  GANTRY_RETURN_IF_ERROR(CheckSameDevice(kOp, {&x, &y}));
  GANTRY_RETURN_IF_ERROR(CheckHasLastDim(kOp, "x", x));
  GANTRY_RETURN_IF_ERROR(CheckShape(kOp, "y", y, x.shape()));
  GANTRY_KERNELS_DISPATCH(kOp, x.device(), SoftmaxForward(x, y));
}

Status SoftmaxBackward(const Tensor& y, const Tensor& dy, Tensor& dx) {
  constexpr const char* kOp = "SoftmaxBackward";
  GANTRY_RETURN_IF_ERROR(CheckDTypes(kOp, DType::kF32, {{"y", &y}, {"dy", &dy}, {"dx", &dx}}));
  GANTRY_RETURN_IF_ERROR(CheckSameDevice(kOp, {&y, &dy, &dx}));
  GANTRY_RETURN_IF_ERROR(CheckHasLastDim(kOp, "y", y));
  GANTRY_RETURN_IF_ERROR(CheckShape(kOp, "dy", dy, y.shape()));
  GANTRY_RETURN_IF_ERROR(CheckShape(kOp, "dx", dx, y.shape()));
  GANTRY_KERNELS_DISPATCH(kOp, y.device(), SoftmaxBackward(y, dy, dx));
}

Status LayerNormForward(const Tensor& x, const Tensor& gamma, const Tensor& beta, float eps,
                        Tensor& y, Tensor& mean, Tensor& rstd) {
  constexpr const char* kOp = "LayerNormForward";
  GANTRY_RETURN_IF_ERROR(CheckDTypes(kOp, DType::kF32,
                                     {{"x", &x}, {"gamma", &gamma}, {"beta", &beta}, {"y", &y},
                                      {"mean", &mean}, {"rstd", &rstd}}));
  GANTRY_RETURN_IF_ERROR(CheckSameDevice(kOp, {&x, &gamma, &beta, &y, &mean, &rstd}));
  GANTRY_RETURN_IF_ERROR(CheckHasLastDim(kOp, "x", x));
  const int64_t c = x.dim(-1), rows = x.numel() / c;
  GANTRY_RETURN_IF_ERROR(CheckShape(kOp, "gamma", gamma, {c}));
  GANTRY_RETURN_IF_ERROR(CheckShape(kOp, "beta", beta, {c}));
  GANTRY_RETURN_IF_ERROR(CheckShape(kOp, "y", y, x.shape()));
  GANTRY_RETURN_IF_ERROR(CheckNumel(kOp, "mean", mean, rows));
  GANTRY_RETURN_IF_ERROR(CheckNumel(kOp, "rstd", rstd, rows));
  if (!(eps >= 0.0f)) {
    return InvalidArgumentError("LayerNormForward: eps must be >= 0, got " + std::to_string(eps));
  }
  GANTRY_KERNELS_DISPATCH(kOp, x.device(), LayerNormForward(x, gamma, beta, eps, y, mean, rstd));
}

Status LayerNormBackward(const Tensor& x, const Tensor& gamma, const Tensor& mean,
                         const Tensor& rstd, const Tensor& dy, Tensor& dx, Tensor& dgamma,
                         Tensor& dbeta) {
  constexpr const char* kOp = "LayerNormBackward";
  GANTRY_RETURN_IF_ERROR(CheckDTypes(kOp, DType::kF32,
                                     {{"x", &x}, {"gamma", &gamma}, {"mean", &mean},
                                      {"rstd", &rstd}, {"dy", &dy}, {"dx", &dx},
                                      {"dgamma", &dgamma}, {"dbeta", &dbeta}}));
  GANTRY_RETURN_IF_ERROR(
      CheckSameDevice(kOp, {&x, &gamma, &mean, &rstd, &dy, &dx, &dgamma, &dbeta}));
  GANTRY_RETURN_IF_ERROR(CheckHasLastDim(kOp, "x", x));
  const int64_t c = x.dim(-1), rows = x.numel() / c;
  GANTRY_RETURN_IF_ERROR(CheckShape(kOp, "gamma", gamma, {c}));
  GANTRY_RETURN_IF_ERROR(CheckNumel(kOp, "mean", mean, rows));
  GANTRY_RETURN_IF_ERROR(CheckNumel(kOp, "rstd", rstd, rows));
  GANTRY_RETURN_IF_ERROR(CheckShape(kOp, "dy", dy, x.shape()));
  GANTRY_RETURN_IF_ERROR(CheckShape(kOp, "dx", dx, x.shape()));
  GANTRY_RETURN_IF_ERROR(CheckShape(kOp, "dgamma", dgamma, {c}));
  GANTRY_RETURN_IF_ERROR(CheckShape(kOp, "dbeta", dbeta, {c}));
  GANTRY_KERNELS_DISPATCH(kOp, x.device(),
                          LayerNormBackward(x, gamma, mean, rstd, dy, dx, dgamma, dbeta));
}

}  // namespace gantry::kernels
