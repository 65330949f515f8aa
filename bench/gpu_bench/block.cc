// One gpt-tiny transformer block (pre-LayerNorm, causal attention, GELU MLP, residuals),
// forward + backward with accumulated parameter gradients, written with the public kernels
// API exactly as a model would call it. Shapes: B=16, T=128, C=256, 4 heads, MLP 1024.
#include <string>

#include "bench/gpu_bench/cases.h"
#include "kernels/activation.h"
#include "kernels/attention.h"
#include "kernels/linear.h"
#include "kernels/norm.h"

namespace gantry::bench {
namespace {

using kernels::Activation;
using kernels::Device;
using kernels::DType;
using kernels::Shape;
using kernels::Tensor;

constexpr int64_t B = 16, T = 128, C = 256, H = 4, M = 1024;

struct Block {
  // Parameters and their gradients.
  Tensor ln1_g, ln1_b, w_qkv, b_qkv, w_proj, b_proj, ln2_g, ln2_b, w_fc, b_fc, w_out, b_out;
  Tensor d_ln1_g, d_ln1_b, d_w_qkv, d_b_qkv, d_w_proj, d_b_proj, d_ln2_g, d_ln2_b, d_w_fc,
      d_b_fc, d_w_out, d_b_out;
  // Activations (forward) and their gradients (backward).
  Tensor x, ln1, mean1, rstd1, qkv, att, atty, res1, ln2, mean2, rstd2, fc, gelu, res2;
  Tensor dout, dgelu, dfc, dln2, dres1, datty, dqkv, datt, dln1, dx;
};

StatusOr<Tensor> Zeros(const Shape& s) { return Tensor::Empty(s, DType::kF32, Device::Cuda(0)); }

StatusOr<Block> MakeBlock() {
  Block k;
  uint32_t seed = 100;
  auto rnd = [&](const Shape& s) { return RandomOnGpu(s, seed++); };
  GANTRY_ASSIGN_OR_RETURN(k.ln1_g, rnd({C}));
  GANTRY_ASSIGN_OR_RETURN(k.ln1_b, rnd({C}));
  GANTRY_ASSIGN_OR_RETURN(k.w_qkv, rnd({3 * C, C}));
  GANTRY_ASSIGN_OR_RETURN(k.b_qkv, rnd({3 * C}));
  GANTRY_ASSIGN_OR_RETURN(k.w_proj, rnd({C, C}));
  GANTRY_ASSIGN_OR_RETURN(k.b_proj, rnd({C}));
  GANTRY_ASSIGN_OR_RETURN(k.ln2_g, rnd({C}));
  GANTRY_ASSIGN_OR_RETURN(k.ln2_b, rnd({C}));
  GANTRY_ASSIGN_OR_RETURN(k.w_fc, rnd({M, C}));
  GANTRY_ASSIGN_OR_RETURN(k.b_fc, rnd({M}));
  GANTRY_ASSIGN_OR_RETURN(k.w_out, rnd({C, M}));
  GANTRY_ASSIGN_OR_RETURN(k.b_out, rnd({C}));
  GANTRY_ASSIGN_OR_RETURN(k.x, rnd({B, T, C}));
  GANTRY_ASSIGN_OR_RETURN(k.dout, rnd({B, T, C}));
  for (auto [t, s] : {std::pair{&k.d_ln1_g, Shape{C}}, {&k.d_ln1_b, {C}}, {&k.d_w_qkv, {3 * C, C}},
                      {&k.d_b_qkv, {3 * C}}, {&k.d_w_proj, {C, C}}, {&k.d_b_proj, {C}},
                      {&k.d_ln2_g, {C}}, {&k.d_ln2_b, {C}}, {&k.d_w_fc, {M, C}}, {&k.d_b_fc, {M}},
                      {&k.d_w_out, {C, M}}, {&k.d_b_out, {C}}, {&k.ln1, {B, T, C}},
                      {&k.mean1, {B * T}}, {&k.rstd1, {B * T}}, {&k.qkv, {B, T, 3 * C}},
                      {&k.att, {B, H, T, T}}, {&k.atty, {B, T, C}}, {&k.res1, {B, T, C}},
                      {&k.ln2, {B, T, C}}, {&k.mean2, {B * T}}, {&k.rstd2, {B * T}},
                      {&k.fc, {B, T, M}}, {&k.gelu, {B, T, M}}, {&k.res2, {B, T, C}},
                      {&k.dgelu, {B, T, M}}, {&k.dfc, {B, T, M}}, {&k.dln2, {B, T, C}},
                      {&k.dres1, {B, T, C}}, {&k.datty, {B, T, C}}, {&k.dqkv, {B, T, 3 * C}},
                      {&k.datt, {B, H, T, T}}, {&k.dln1, {B, T, C}}, {&k.dx, {B, T, C}}}) {
    GANTRY_ASSIGN_OR_RETURN(*t, Zeros(s));
  }
  return k;
}

Status Forward(Block& k) {
  using namespace kernels;  // NOLINT: the op names read as the model
  GANTRY_RETURN_IF_ERROR(LayerNormForward(k.x, k.ln1_g, k.ln1_b, 1e-5f, k.ln1, k.mean1, k.rstd1));
  GANTRY_RETURN_IF_ERROR(LinearForward(k.ln1, k.w_qkv, &k.b_qkv, k.qkv));
  GANTRY_RETURN_IF_ERROR(CausalSelfAttentionForward(k.qkv, H, k.atty, k.att));
  GANTRY_RETURN_IF_ERROR(LinearForward(k.atty, k.w_proj, &k.b_proj, k.res1));
  GANTRY_RETURN_IF_ERROR(AddInPlace(k.res1, k.x));
  GANTRY_RETURN_IF_ERROR(LayerNormForward(k.res1, k.ln2_g, k.ln2_b, 1e-5f, k.ln2, k.mean2, k.rstd2));
  GANTRY_RETURN_IF_ERROR(LinearForward(k.ln2, k.w_fc, &k.b_fc, k.fc));
  GANTRY_RETURN_IF_ERROR(ActivationForward(Activation::kGelu, k.fc, k.gelu));
  GANTRY_RETURN_IF_ERROR(LinearForward(k.gelu, k.w_out, &k.b_out, k.res2));
  return AddInPlace(k.res2, k.res1);
}

Status Backward(Block& k) {
  using namespace kernels;  // NOLINT
  // res2 = res1 + mlp(ln2(res1)); dout flows to both.
  GANTRY_RETURN_IF_ERROR(LinearBackward(k.gelu, k.w_out, k.dout, &k.dgelu, k.d_w_out, &k.d_b_out));
  GANTRY_RETURN_IF_ERROR(ActivationBackward(Activation::kGelu, k.fc, k.gelu, k.dgelu, k.dfc));
  GANTRY_RETURN_IF_ERROR(LinearBackward(k.ln2, k.w_fc, k.dfc, &k.dln2, k.d_w_fc, &k.d_b_fc));
  GANTRY_RETURN_IF_ERROR(LayerNormBackward(k.res1, k.ln2_g, k.mean2, k.rstd2, k.dln2, k.dres1,
                                           k.d_ln2_g, k.d_ln2_b));
  GANTRY_RETURN_IF_ERROR(AddInPlace(k.dres1, k.dout));
  // res1 = x + proj(attn(ln1(x))).
  GANTRY_RETURN_IF_ERROR(LinearBackward(k.atty, k.w_proj, k.dres1, &k.datty, k.d_w_proj, &k.d_b_proj));
  GANTRY_RETURN_IF_ERROR(CausalSelfAttentionBackward(k.qkv, k.att, k.datty, H, k.dqkv, k.datt));
  GANTRY_RETURN_IF_ERROR(LinearBackward(k.ln1, k.w_qkv, k.dqkv, &k.dln1, k.d_w_qkv, &k.d_b_qkv));
  GANTRY_RETURN_IF_ERROR(LayerNormBackward(k.x, k.ln1_g, k.mean1, k.rstd1, k.dln1, k.dx,
                                           k.d_ln1_g, k.d_ln1_b));
  return AddInPlace(k.dx, k.dres1);
}

}  // namespace

StatusOr<double> RunGptTinyBlock(int iters, int repeats) {
  GANTRY_ASSIGN_OR_RETURN(Block k, MakeBlock());
  return TimeOnGpu(
      [&]() -> Status {
        GANTRY_RETURN_IF_ERROR(Forward(k));
        return Backward(k);
      },
      iters, repeats);
}

}  // namespace gantry::bench
