// Causal multi-head self-attention core (after the QKV projection, before the output
// projection), GPT-2 layout. See kernels/linear.h for conventions.
#pragma once

#include "kernels/tensor.h"

namespace gantry::kernels {

// qkv [B, T, 3C] holds q | k | v along the last dim, each split into `heads` heads of
// D = C / heads. out [B, T, C] = concat_h softmax(q_h k_hT / sqrt(D) + causal mask) v_h.
// att [B, heads, T, T] receives the softmax probabilities (needed by backward; entries above
// the diagonal are 0).
Status CausalSelfAttentionForward(const Tensor& qkv, int heads, Tensor& out, Tensor& att);
// dqkv [B, T, 3C] overwritten. datt [B, heads, T, T] is caller-provided scratch for CUDA; the
// CPU path keeps dS in a per-thread block buffer, never touches datt, and accepts an undefined
// Tensor() there (a [B, heads, T, T] buffer is B * heads * T^2 floats: 400 MiB at B 8, 12
// heads, T 1024).
Status CausalSelfAttentionBackward(const Tensor& qkv, const Tensor& att, const Tensor& dout,
                                   int heads, Tensor& dqkv, Tensor& datt);

}  // namespace gantry::kernels
