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

}  // namespace gantry::kernels
