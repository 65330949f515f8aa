// GptModel: GPT-2 style decoder (learned positions, pre-LayerNorm, tanh-GELU MLP, lm_head
// tied to wte, LayerNorm eps 1e-5, no dropout). Parameter names as nanoGPT's module
// ("wte.weight", "h.{i}.attn.c_attn.weight", ...); see docs/models.md. The forward and
// backward passes read as named steps in the llm.c style.
#pragma once

#include <memory>
#include <vector>

#include "train/model.h"

namespace gantry::train {

class GptModel : public Model {
 public:
  static constexpr float kLayerNormEps = 1e-5f;
  static constexpr int64_t kLmBlockRows = 256;  // rows per lm_head block (256 x 8192 f32 = 8 MiB)

  static StatusOr<std::unique_ptr<Model>> Create(const ModelSpec& spec, int batch,
                                                 kernels::Device device);

  Status InitParams(uint64_t seed) override;
  Status Forward(const Batch& batch) override;
  Status Backward(const Batch& batch, float loss_scale = 1.0f) override;
  StatusOr<float> Loss() const override { return ReadScalar(loss_); }
  // A Forward with targets leaves the logits uncomputed (training never reads them); they are
  // computed here on the first call, from that Forward's ln_f output and wte.
  const kernels::Tensor& Logits() const override;
  int64_t ItemsPerBatch() const override { return int64_t(batch_) * spec_.context; }

 private:
  // Indices into params_ of one block's parameters.
  struct BlockParams {
    int ln1_w, ln1_b, attn_w, attn_b, attn_proj_w, attn_proj_b;
    int ln2_w, ln2_b, fc_w, fc_b, mlp_proj_w, mlp_proj_b;
  };
  // Saved activations of one block (everything backward needs).
  struct BlockActs {
    kernels::Tensor ln1, ln1_mean, ln1_rstd;  // [B,T,C], [B*T], [B*T]
    kernels::Tensor qkv;                      // [B,T,3C]
    kernels::Tensor atty;                     // [B,T,C]
    kernels::Tensor att;                      // [B,NH,T,T]
    kernels::Tensor res2;                     // [B,T,C] residual after attention
    kernels::Tensor ln2, ln2_mean, ln2_rstd;
    kernels::Tensor fch, fch_gelu;  // [B,T,M]
    kernels::Tensor res3;           // [B,T,C] residual after the MLP (block output)
  };
  GptModel() = default;
  Status Build();
  Status AllocateActivations();
  Status BlockForward(int l, const kernels::Tensor& x);
  Status BlockBackward(int l, const kernels::Tensor& x);  // dres_ holds d(block output)
  // Tied lm_head + softmax cross-entropy in row blocks: each block's logits stay in cache
  // (lm_block_) instead of a 64 MiB round trip through memory; writes probs_ and loss_.
  Status LmHeadForward(const Batch& batch);
  Status EnsureLogitsBuffer() const;  // allocates logits_ on first use

  kernels::Tensor P(int i) const { return Param(params_[i]); }
  kernels::Tensor G(int i) const { return Grad(params_[i]); }

  int wte_ = 0, wpe_ = 1, lnf_w_ = 0, lnf_b_ = 0;
  std::vector<BlockParams> blocks_;
  std::vector<int> accumulated_params_;  // gradients Backward must zero before accumulating
  std::vector<BlockActs> acts_;
  kernels::Tensor encoded_;  // [B,T,C] embeddings (block 0 input)
  kernels::Tensor proj_;     // [B,T,C] scratch for c_proj outputs
  kernels::Tensor lnf_, lnf_mean_, lnf_rstd_;
  // [B,T,V] logits: allocated on first use (sampling, Logits()), never by training alone.
  mutable kernels::Tensor logits_;
  kernels::Tensor probs_, loss_;               // [B,T,V] (dlogits in backward), [1]
  kernels::Tensor loss_part_, lm_block_;       // [1] one block's mean loss, [kLmBlockRows,V]
  kernels::Tensor wte_used_;                   // [V,C] wte of the last Forward with targets
  mutable bool logits_stale_ = false;          // logits_ not computed for the last Forward
  kernels::Tensor dres_, dtmp_, dln_, datty_;  // [B,T,C] backward scratch
  kernels::Tensor dqkv_, dfch_, datt_;         // [B,T,3C], [B,T,M], [B,NH,T,T] (CUDA only)
};

}  // namespace gantry::train
