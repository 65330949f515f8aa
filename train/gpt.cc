// GptModel: parameters, preallocated activations, and forward/backward as named steps.
#include "train/gpt.h"

#include <algorithm>
#include <cmath>

#include "base/logging.h"
#include "kernels/activation.h"
#include "kernels/attention.h"
#include "kernels/embedding.h"
#include "kernels/linear.h"
#include "kernels/loss.h"
#include "kernels/norm.h"

namespace gantry::train {

using kernels::Activation;
using kernels::DType;
using kernels::Shape;
using kernels::Tensor;

namespace {
bool EndsWith(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// Cross-entropy backward folded into the tied lm_head's GEMMs: dlogits = s (P - onehot(t)) with
// s = loss_scale / rows, so dx = s P W - s W[t] and dw = s P^T x - s onehot(t)^T x. This skips
// a full read+write pass over the [rows, vocab] probabilities (64 MiB for gpt-tiny). tmp: [rows, C].
Status LmHeadBackward(const Tensor& x, const Tensor& w, const Tensor& probs, const Tensor& targets,
                      float loss_scale, Tensor& dx, Tensor& dw, Tensor& tmp) {
  const float s = loss_scale / float(targets.numel());
  kernels::GemmOptions dx_opts;
  dx_opts.alpha = s;
  GANTRY_RETURN_IF_ERROR(kernels::Matmul(probs, w, dx, dx_opts));  // s P W
  kernels::GemmOptions dw_opts;
  dw_opts.trans_a = true;
  dw_opts.alpha = s;
  GANTRY_RETURN_IF_ERROR(kernels::Matmul(probs, x, dw, dw_opts));  // = s P^T x (first write)
  GANTRY_RETURN_IF_ERROR(kernels::EmbeddingForward(targets, w, nullptr, tmp));  // W[t]
  GANTRY_RETURN_IF_ERROR(kernels::AddInPlace(dx, tmp, -s));
  GANTRY_RETURN_IF_ERROR(kernels::Zero(tmp));
  GANTRY_RETURN_IF_ERROR(kernels::AddInPlace(tmp, x, -s));
  return kernels::EmbeddingBackward(targets, tmp, dw, nullptr);  // dw[t] -= s x
}
// LinearBackward that OVERWRITES dw (db still accumulates): the weight gradients' first write
// is this GEMM, so Backward zeroes only the small gradients, not the whole 21 MB buffer
// (same GEMMs, same bits as accumulating onto zeros).
Status LinearBackwardOverwrite(const Tensor& x, const Tensor& w, const Tensor& dy, Tensor& dx,
                               Tensor& dw, Tensor* db) {
  GANTRY_RETURN_IF_ERROR(kernels::Matmul(dy, w, dx));  // dy * w
  kernels::GemmOptions dw_opts;
  dw_opts.trans_a = true;
  GANTRY_RETURN_IF_ERROR(kernels::Matmul(dy, x, dw, dw_opts));  // dy^T * x
  return db != nullptr ? kernels::BiasAddBackward(dy, *db) : OkStatus();
}
}  // namespace

StatusOr<std::unique_ptr<Model>> GptModel::Create(const ModelSpec& spec, int batch,
                                                  kernels::Device device) {
  std::unique_ptr<GptModel> m(new GptModel());
  m->spec_ = spec;
  if (m->spec_.mlp == 0) m->spec_.mlp = 4 * spec.d_model;
  m->batch_ = batch;
  m->device_ = device;
  GANTRY_RETURN_IF_ERROR(m->Build());
  return std::unique_ptr<Model>(std::move(m));
}

Status GptModel::Build() {
  const ModelSpec& s = spec_;
  if (s.vocab <= 0 || s.context <= 0 || s.d_model <= 0 || s.layers <= 0 || s.heads <= 0 ||
      s.mlp <= 0) {
    return InvalidArgumentError(
        "gpt: model.vocab, context, d_model, layers, heads and mlp must all be positive");
  }
  if (s.d_model % s.heads != 0) {
    return InvalidArgumentError("gpt: model.d_model (" + std::to_string(s.d_model) +
                                ") must be divisible by model.heads (" + std::to_string(s.heads) +
                                ")");
  }
  const int64_t V = s.vocab, T = s.context, C = s.d_model, M = s.mlp;
  auto add = [this](const std::string& name, Shape shape, bool decay) {
    AddParam(name, std::move(shape), decay);
    return int(params_.size()) - 1;
  };
  wte_ = add("wte.weight", {V, C}, true);
  wpe_ = add("wpe.weight", {T, C}, true);
  for (int l = 0; l < s.layers; ++l) {
    const std::string h = "h." + std::to_string(l) + ".";
    BlockParams b;
    b.ln1_w = add(h + "ln_1.weight", {C}, false);
    b.ln1_b = add(h + "ln_1.bias", {C}, false);
    b.attn_w = add(h + "attn.c_attn.weight", {3 * C, C}, true);
    b.attn_b = add(h + "attn.c_attn.bias", {3 * C}, false);
    b.attn_proj_w = add(h + "attn.c_proj.weight", {C, C}, true);
    b.attn_proj_b = add(h + "attn.c_proj.bias", {C}, false);
    b.ln2_w = add(h + "ln_2.weight", {C}, false);
    b.ln2_b = add(h + "ln_2.bias", {C}, false);
    b.fc_w = add(h + "mlp.c_fc.weight", {M, C}, true);
    b.fc_b = add(h + "mlp.c_fc.bias", {M}, false);
    b.mlp_proj_w = add(h + "mlp.c_proj.weight", {C, M}, true);
    b.mlp_proj_b = add(h + "mlp.c_proj.bias", {C}, false);
    blocks_.push_back(b);
  }
  lnf_w_ = add("ln_f.weight", {C}, false);
  lnf_b_ = add("ln_f.bias", {C}, false);
  std::vector<bool> overwritten(params_.size(), false);  // by a GEMM in Backward
  overwritten[wte_] = true;
  for (const BlockParams& b : blocks_) {
    for (int i : {b.attn_w, b.attn_proj_w, b.fc_w, b.mlp_proj_w}) overwritten[i] = true;
  }
  for (int i = 0; i < int(params_.size()); ++i) {
    if (!overwritten[i]) accumulated_params_.push_back(i);
  }
  GANTRY_RETURN_IF_ERROR(AllocateFlatBuffers());
  return AllocateActivations();
}

Status GptModel::AllocateActivations() {
  const int64_t B = batch_, T = spec_.context, C = spec_.d_model, M = spec_.mlp;
  const int64_t V = spec_.vocab, NH = spec_.heads;
  auto f32 = [this](Tensor& t, const Shape& shape) -> Status {
    GANTRY_ASSIGN_OR_RETURN(t, Tensor::Empty(shape, DType::kF32, device_));
    return OkStatus();
  };
  acts_.resize(blocks_.size());
  for (BlockActs& a : acts_) {
    GANTRY_RETURN_IF_ERROR(f32(a.ln1, {B, T, C}));
    GANTRY_RETURN_IF_ERROR(f32(a.ln1_mean, {B * T}));
    GANTRY_RETURN_IF_ERROR(f32(a.ln1_rstd, {B * T}));
    GANTRY_RETURN_IF_ERROR(f32(a.qkv, {B, T, 3 * C}));
    GANTRY_RETURN_IF_ERROR(f32(a.atty, {B, T, C}));
    GANTRY_RETURN_IF_ERROR(f32(a.att, {B, NH, T, T}));
    GANTRY_RETURN_IF_ERROR(f32(a.res2, {B, T, C}));
    GANTRY_RETURN_IF_ERROR(f32(a.ln2, {B, T, C}));
    GANTRY_RETURN_IF_ERROR(f32(a.ln2_mean, {B * T}));
    GANTRY_RETURN_IF_ERROR(f32(a.ln2_rstd, {B * T}));
    GANTRY_RETURN_IF_ERROR(f32(a.fch, {B, T, M}));
    GANTRY_RETURN_IF_ERROR(f32(a.fch_gelu, {B, T, M}));
    GANTRY_RETURN_IF_ERROR(f32(a.res3, {B, T, C}));
  }
  for (Tensor* t : {&encoded_, &proj_, &lnf_, &dres_, &dtmp_, &dln_, &datty_}) {
    GANTRY_RETURN_IF_ERROR(f32(*t, {B, T, C}));
  }
  GANTRY_RETURN_IF_ERROR(f32(lnf_mean_, {B * T}));
  GANTRY_RETURN_IF_ERROR(f32(lnf_rstd_, {B * T}));
  GANTRY_RETURN_IF_ERROR(f32(probs_, {B, T, V}));
  GANTRY_RETURN_IF_ERROR(f32(loss_, {1}));
  GANTRY_RETURN_IF_ERROR(f32(loss_part_, {1}));
  GANTRY_RETURN_IF_ERROR(f32(lm_block_, {std::min(kLmBlockRows, B * T), V}));
  GANTRY_RETURN_IF_ERROR(f32(wte_used_, {V, C}));
  GANTRY_RETURN_IF_ERROR(f32(dqkv_, {B, T, 3 * C}));
  GANTRY_RETURN_IF_ERROR(f32(dfch_, {B, T, M}));
  // Attention's backward scratch: CUDA only (the CPU backward needs none).
  return device_.is_cuda() ? f32(datt_, {B, NH, T, T}) : OkStatus();
}

Status GptModel::InitParams(uint64_t seed) {
  // nanoGPT: normal(0, 0.02) for weights and embeddings, residual projections (c_proj) scaled
  // by 1/sqrt(2 * layers); biases 0; LayerNorm weight 1, bias 0.
  const float proj_std = 0.02f / std::sqrt(2.0f * float(spec_.layers));
  return InitFromHost(seed, [proj_std](const ParamInfo& p, float* v, Rng& rng) {
    const bool is_ln = p.name.find("ln_") != std::string::npos;
    if (EndsWith(p.name, ".bias")) {
      for (int64_t i = 0; i < p.numel; ++i) v[i] = 0.0f;
    } else if (is_ln) {
      for (int64_t i = 0; i < p.numel; ++i) v[i] = 1.0f;
    } else {
      const float std = EndsWith(p.name, "c_proj.weight") ? proj_std : 0.02f;
      for (int64_t i = 0; i < p.numel; ++i) v[i] = rng.Normal() * std;
    }
  });
}

Status GptModel::BlockForward(int l, const Tensor& x) {
  const BlockParams& p = blocks_[l];
  BlockActs& a = acts_[l];
  Tensor ab = P(p.attn_b), apb = P(p.attn_proj_b), fb = P(p.fc_b), mpb = P(p.mlp_proj_b);
  // attention sub-block: res2 = x + c_proj(attn(c_attn(ln_1(x))))
  GANTRY_RETURN_IF_ERROR(kernels::LayerNormForward(x, P(p.ln1_w), P(p.ln1_b), kLayerNormEps, a.ln1,
                                                   a.ln1_mean, a.ln1_rstd));
  GANTRY_RETURN_IF_ERROR(kernels::LinearForward(a.ln1, P(p.attn_w), &ab, a.qkv));
  GANTRY_RETURN_IF_ERROR(kernels::CausalSelfAttentionForward(a.qkv, spec_.heads, a.atty, a.att));
  GANTRY_RETURN_IF_ERROR(kernels::LinearForward(a.atty, P(p.attn_proj_w), &apb, proj_));
  GANTRY_RETURN_IF_ERROR(kernels::Add(x, proj_, a.res2));
  // MLP sub-block: res3 = res2 + c_proj(gelu(c_fc(ln_2(res2))))
  GANTRY_RETURN_IF_ERROR(kernels::LayerNormForward(a.res2, P(p.ln2_w), P(p.ln2_b), kLayerNormEps,
                                                   a.ln2, a.ln2_mean, a.ln2_rstd));
  // c_fc's bias add and GELU in one pass over the [B*T, mlp] activations
  GANTRY_RETURN_IF_ERROR(kernels::LinearForward(a.ln2, P(p.fc_w), nullptr, a.fch));
  GANTRY_RETURN_IF_ERROR(kernels::BiasActivationForward(Activation::kGelu, a.fch, fb, a.fch_gelu));
  GANTRY_RETURN_IF_ERROR(kernels::LinearForward(a.fch_gelu, P(p.mlp_proj_w), &mpb, proj_));
  return kernels::Add(a.res2, proj_, a.res3);
}

Status GptModel::Forward(const Batch& batch) {
  Tensor wpe = P(wpe_);
  GANTRY_RETURN_IF_ERROR(kernels::EmbeddingForward(batch.inputs, P(wte_), &wpe, encoded_));
  Tensor x = encoded_;
  for (int l = 0; l < int(blocks_.size()); ++l) {
    GANTRY_RETURN_IF_ERROR(BlockForward(l, x));
    x = acts_[l].res3;
  }
  GANTRY_RETURN_IF_ERROR(kernels::LayerNormForward(x, P(lnf_w_), P(lnf_b_), kLayerNormEps, lnf_,
                                                   lnf_mean_, lnf_rstd_));
  if (batch.targets.raw() != nullptr) return LmHeadForward(batch);
  GANTRY_RETURN_IF_ERROR(EnsureLogitsBuffer());
  logits_stale_ = false;
  return kernels::LinearForward(lnf_, P(wte_), nullptr, logits_);  // tied head
}

Status GptModel::LmHeadForward(const Batch& batch) {
  const int64_t rows = lnf_.numel() / spec_.d_model, V = spec_.vocab, C = spec_.d_model;
  GANTRY_RETURN_IF_ERROR(kernels::Zero(loss_));
  for (int64_t r0 = 0; r0 < rows; r0 += kLmBlockRows) {
    const int64_t n = std::min(kLmBlockRows, rows - r0);
    Tensor logits = lm_block_.View(0, {n, V});
    Tensor probs = probs_.View(r0 * V, {n, V});
    GANTRY_RETURN_IF_ERROR(  // tied head
        kernels::LinearForward(lnf_.View(r0 * C, {n, C}), P(wte_), nullptr, logits));
    GANTRY_RETURN_IF_ERROR(kernels::CrossEntropyForward(logits, batch.targets.View(r0, {n}), probs,
                                                        loss_part_));
    // loss = sum over blocks of (block mean) * n / rows
    GANTRY_RETURN_IF_ERROR(kernels::AddInPlace(loss_, loss_part_, float(n) / float(rows)));
  }
  // Logits() may come after an optimizer step: keep the wte this Forward used (8 MiB, far
  // cheaper than writing the 64 MiB of logits nobody reads during training).
  GANTRY_RETURN_IF_ERROR(kernels::Copy(P(wte_), wte_used_));
  logits_stale_ = true;
  return OkStatus();
}

Status GptModel::EnsureLogitsBuffer() const {
  if (logits_.defined()) return OkStatus();
  GANTRY_ASSIGN_OR_RETURN(logits_,
                          Tensor::Empty({batch_, spec_.context, spec_.vocab}, DType::kF32, device_));
  return OkStatus();
}

const Tensor& GptModel::Logits() const {
  if (logits_stale_) {
    Status st = EnsureLogitsBuffer();
    if (st.ok()) {
      Tensor out = logits_;  // shares the buffer
      st = kernels::LinearForward(lnf_, wte_used_, nullptr, out);
    }
    // Every shape was checked when the model was built: only an allocation or device failure
    // lands here (the caller then gets an empty tensor or stale values, and this log line).
    if (!st.ok()) GANTRY_LOG(ERROR, "gpt: computing the logits failed").Field("status", st);
    logits_stale_ = false;
  }
  return logits_;
}

Status GptModel::BlockBackward(int l, const Tensor& x) {
  const BlockParams& p = blocks_[l];
  BlockActs& a = acts_[l];
  Tensor fb = G(p.fc_b), mpb = G(p.mlp_proj_b), ab = G(p.attn_b), apb = G(p.attn_proj_b);
  Tensor dmpw = G(p.mlp_proj_w), dfw = G(p.fc_w), dapw = G(p.attn_proj_w), daw = G(p.attn_w);
  Tensor dln2w = G(p.ln2_w), dln2b = G(p.ln2_b), dln1w = G(p.ln1_w), dln1b = G(p.ln1_b);
  // MLP sub-block; dres_ = d(res3) and becomes d(res2).
  GANTRY_RETURN_IF_ERROR(
      LinearBackwardOverwrite(a.fch_gelu, P(p.mlp_proj_w), dres_, dfch_, dmpw, &mpb));
  // GELU derivative and c_fc's bias gradient in one pass
  GANTRY_RETURN_IF_ERROR(
      kernels::ActivationBiasBackward(Activation::kGelu, a.fch, a.fch_gelu, dfch_, dfch_, fb));
  GANTRY_RETURN_IF_ERROR(LinearBackwardOverwrite(a.ln2, P(p.fc_w), dfch_, dln_, dfw, nullptr));
  GANTRY_RETURN_IF_ERROR(kernels::LayerNormBackward(a.res2, P(p.ln2_w), a.ln2_mean, a.ln2_rstd,
                                                    dln_, dtmp_, dln2w, dln2b));
  GANTRY_RETURN_IF_ERROR(kernels::AddInPlace(dres_, dtmp_));
  // attention sub-block; dres_ becomes d(x).
  GANTRY_RETURN_IF_ERROR(
      LinearBackwardOverwrite(a.atty, P(p.attn_proj_w), dres_, datty_, dapw, &apb));
  GANTRY_RETURN_IF_ERROR(
      kernels::CausalSelfAttentionBackward(a.qkv, a.att, datty_, spec_.heads, dqkv_, datt_));
  GANTRY_RETURN_IF_ERROR(LinearBackwardOverwrite(a.ln1, P(p.attn_w), dqkv_, dln_, daw, &ab));
  GANTRY_RETURN_IF_ERROR(
      kernels::LayerNormBackward(x, P(p.ln1_w), a.ln1_mean, a.ln1_rstd, dln_, dtmp_, dln1w, dln1b));
  return kernels::AddInPlace(dres_, dtmp_);
}

Status GptModel::Backward(const Batch& batch, float loss_scale) {
  if (batch.targets.raw() == nullptr) {
    return InvalidArgumentError("gpt: Backward needs a batch with targets");
  }
  // The big weight gradients are overwritten by their first GEMM; zero only the rest.
  for (int i : accumulated_params_) {
    Tensor g = G(i);
    GANTRY_RETURN_IF_ERROR(kernels::Zero(g));
  }
  // loss -> tied lm_head -> ln_f
  Tensor dwte = G(wte_), dwpe = G(wpe_), dlnfw = G(lnf_w_), dlnfb = G(lnf_b_);
  GANTRY_RETURN_IF_ERROR(
      LmHeadBackward(lnf_, P(wte_), probs_, batch.targets, loss_scale, dln_, dwte, dtmp_));
  const int L = int(blocks_.size());
  const Tensor& last = acts_[L - 1].res3;
  GANTRY_RETURN_IF_ERROR(
      kernels::LayerNormBackward(last, P(lnf_w_), lnf_mean_, lnf_rstd_, dln_, dres_, dlnfw, dlnfb));
  GradReady(params_[lnf_w_].offset);
  // blocks, last to first; each leaves d(its input) in dres_
  for (int l = L - 1; l >= 0; --l) {
    GANTRY_RETURN_IF_ERROR(BlockBackward(l, l == 0 ? encoded_ : acts_[l - 1].res3));
    GradReady(params_[blocks_[l].ln1_w].offset);
  }
  // embeddings (wte also got the lm_head gradient above)
  GANTRY_RETURN_IF_ERROR(kernels::EmbeddingBackward(batch.inputs, dres_, dwte, &dwpe));
  GradReady(0);
  return OkStatus();
}

}  // namespace gantry::train
