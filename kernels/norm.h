// Softmax and LayerNorm over the last dimension (see kernels/linear.h for conventions).
#pragma once

#include "kernels/tensor.h"

namespace gantry::kernels {

// y = softmax(x) over the last dim, numerically stable (max subtracted).
Status SoftmaxForward(const Tensor& x, Tensor& y);
// dx = y * (dy - sum(dy * y)) over the last dim.
Status SoftmaxBackward(const Tensor& y, const Tensor& dy, Tensor& dx);

// x [N.., C] -> y = (x - mean) * rstd * gamma + beta; saves mean [rows], rstd [rows]
// (rows = numel / C), rstd = 1 / sqrt(var + eps) with the biased variance (as PyTorch).
Status LayerNormForward(const Tensor& x, const Tensor& gamma, const Tensor& beta, float eps,
                        Tensor& y, Tensor& mean, Tensor& rstd);
// dx overwritten; dgamma, dbeta accumulated.
Status LayerNormBackward(const Tensor& x, const Tensor& gamma, const Tensor& mean,
                         const Tensor& rstd, const Tensor& dy, Tensor& dx, Tensor& dgamma,
                         Tensor& dbeta);

}  // namespace gantry::kernels
