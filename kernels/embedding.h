// Token (+ learned position) embedding lookup. See kernels/linear.h for conventions.
#pragma once

#include "kernels/tensor.h"

namespace gantry::kernels {

// tokens i32 [B, T]; wte [V, C]; wpe [Tmax >= T, C] or null. out [B, T, C] =
// wte[tokens[b, t]] + wpe[t]. A token outside [0, V) is kInvalidArgument naming its position.
Status EmbeddingForward(const Tensor& tokens, const Tensor& wte, const Tensor* wpe, Tensor& out);
// dwte[tokens[b, t]] += dout[b, t]; dwpe[t] += sum over b of dout[b, t].
Status EmbeddingBackward(const Tensor& tokens, const Tensor& dout, Tensor& dwte, Tensor* dwpe);

}  // namespace gantry::kernels
