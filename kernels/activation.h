// Elementwise activations with forward and backward (see kernels/linear.h for conventions).
#pragma once

#include <string>

#include "kernels/tensor.h"

namespace gantry::kernels {

// kGelu is the tanh approximation used by GPT-2 (torch: approximate="tanh").
enum class Activation { kRelu, kSigmoid, kTanh, kGelu };
StatusOr<Activation> ParseActivation(const std::string& name);  // "relu", "sigmoid", "tanh", "gelu"
const char* ActivationName(Activation act);

// y = f(x); y may alias x.
Status ActivationForward(Activation act, const Tensor& x, Tensor& y);
// dx = dy * f'(x). `x` is the forward input and `y` the forward output (an op uses whichever
// it needs; both must be valid, i.e. forward must not have run in place); dx may alias dy.
Status ActivationBackward(Activation act, const Tensor& x, const Tensor& y, const Tensor& dy,
                          Tensor& dx);

// Bias + activation in one pass (a transformer MLP's c_fc): z[.., n] += b[n] in place (z is
// the bias-free GEMM output; backward needs z) and y = f(z). Same bits as BiasAddForward +
// ActivationForward. y must not alias z.
Status BiasActivationForward(Activation act, Tensor& z, const Tensor& b, Tensor& y);
// dx = dy * f'(z) (as ActivationBackward, dx may alias dy) and db[n] += sum over rows of dx,
// in one pass. Same bits as ActivationBackward + BiasAddBackward.
Status ActivationBiasBackward(Activation act, const Tensor& z, const Tensor& y, const Tensor& dy,
                              Tensor& dx, Tensor& db);

}  // namespace gantry::kernels
