// CPU backend of the op table: the same functions as the public kernels/*.h headers, in
// gantry::kernels::cpu. The public dispatchers (kernels/<family>.cc) have already checked
// shapes, dtypes (f32 compute) and devices; these functions check only values (token and
// target ranges). Plus host memory helpers and the raw row-major SGEMM used by every op.
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels/activation.h"
#include "kernels/attention.h"
#include "kernels/conv.h"
#include "kernels/embedding.h"
#include "kernels/linear.h"
#include "kernels/loss.h"
#include "kernels/norm.h"
#include "kernels/optim.h"
#include "kernels/tensor.h"

namespace gantry::kernels::cpu {

// ---- memory, conversions, threading ----
void FillZero(void* ptr, size_t bytes);
void CopyBytes(void* dst, const void* src, size_t bytes);
Status Cast(const Tensor& src, Tensor& dst);  // f32 <-> bf16/f16, host
// n floats -> bf16, round to nearest even (VCVTNEPS2BF16 where the CPU has AVX512-BF16, which
// reads denormal inputs as zero). Every bf16 GEMM operand and the optimizer's bf16 copy of the
// parameters (runtime.h MatmulWeightsBf16Copy) go through it, so both give the same bits.
void FloatsToBf16(const float* src, int64_t n, uint16_t* dst);
// Threads worth using for `work` units (~flops or elements): 1 below `min_per_thread` each.
int ThreadsFor(double work, double min_per_thread);

// Row-major C[M,N] = alpha * op(A) * op(B) + beta * C with leading dims (elements per row).
// oneDNN dnnl_sgemm when available, else SgemmPortable (same contract, any machine). Picks
// its own thread count from the size; single-threaded when called inside a parallel region.
// Errors (kInternal) only for inconsistent leading dimensions.
Status Sgemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
           const float* a, int64_t lda, const float* b, int64_t ldb, float beta, float* c,
           int64_t ldc);
// Sgemm with op(A), op(B) rounded to bf16 and f32 accumulation (oneDNN matmul: AMX /
// AVX512-BF16); Sgemm calls it while CpuMatmulPrecision() is kBf16. oneDNN builds only.
// Where [p, p + bytes) lies inside the parameter range (runtime.h SetMatmulWeights): the
// weights epoch, whether the bf16 copy holds this epoch's parameters, and the copy of p.
// Outside it, epoch 0 (not a parameter: never cached).
struct MatmulWeightsInfo {
  uint64_t epoch = 0;
  bool bf16_copy_current = false;
  uint16_t* bf16_copy = nullptr;
};
MatmulWeightsInfo MatmulWeightsOf(const void* p, size_t bytes);
Status SgemmBf16(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                 const float* a, int64_t lda, const float* b, int64_t ldb, float beta, float* c,
                 int64_t ldc, int threads);
Status SgemmPortable(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                     const float* a, int64_t lda, const float* b, int64_t ldb, float beta,
                     float* c, int64_t ldc);
// How Sgemm / SgemmBf16 cut C[m, n] for `threads` pool threads: along N when A is the smaller
// operand (each tile re-packs A), else along M; one tile per thread, tile edges on multiples
// of `align` (at least one `align`).
struct GemmTiling {
  bool along_n;
  int64_t tile, tiles;
};
GemmTiling ChooseGemmTiling(int64_t m, int64_t n, int threads, int64_t align);

// ---- linear.h ----
Status Matmul(const Tensor& a, const Tensor& b, Tensor& c, const GemmOptions& opts);
Status MatmulBackward(const Tensor& a, const Tensor& b, const Tensor& dc, Tensor* da, Tensor* db);
Status LinearForward(const Tensor& x, const Tensor& w, const Tensor* b, Tensor& y);
Status LinearBackward(const Tensor& x, const Tensor& w, const Tensor& dy, Tensor* dx, Tensor& dw,
                      Tensor* db);
Status BiasAddForward(Tensor& y, const Tensor& b);
Status BiasAddBackward(const Tensor& dy, Tensor& db);
Status Add(const Tensor& a, const Tensor& b, Tensor& y);
Status AddInPlace(Tensor& y, const Tensor& x, float alpha);
Status Scale(Tensor& t, float s);

// ---- activation.h ----
Status ActivationForward(Activation act, const Tensor& x, Tensor& y);
Status ActivationBackward(Activation act, const Tensor& x, const Tensor& y, const Tensor& dy,
                          Tensor& dx);
Status BiasActivationForward(Activation act, Tensor& z, const Tensor& b, Tensor& y);
Status ActivationBiasBackward(Activation act, const Tensor& z, const Tensor& y, const Tensor& dy,
                              Tensor& dx, Tensor& db);

// ---- norm.h ----
Status SoftmaxForward(const Tensor& x, Tensor& y);
Status SoftmaxBackward(const Tensor& y, const Tensor& dy, Tensor& dx);
Status LayerNormForward(const Tensor& x, const Tensor& gamma, const Tensor& beta, float eps,
                        Tensor& y, Tensor& mean, Tensor& rstd);
Status LayerNormBackward(const Tensor& x, const Tensor& gamma, const Tensor& mean,
                         const Tensor& rstd, const Tensor& dy, Tensor& dx, Tensor& dgamma,
                         Tensor& dbeta);

// ---- attention.h ----
Status CausalSelfAttentionForward(const Tensor& qkv, int heads, Tensor& out, Tensor& att);
Status CausalSelfAttentionBackward(const Tensor& qkv, const Tensor& att, const Tensor& dout,
                                   int heads, Tensor& dqkv, Tensor& datt);

// ---- embedding.h ----
Status EmbeddingForward(const Tensor& tokens, const Tensor& wte, const Tensor* wpe, Tensor& out);
Status EmbeddingBackward(const Tensor& tokens, const Tensor& dout, Tensor& dwte, Tensor* dwpe);

// ---- conv.h ----
int64_t Conv2dWorkspaceElements(const Shape& x, const Shape& w, const Conv2dOptions& opts);
Status Conv2dForward(const Tensor& x, const Tensor& w, const Tensor* b, const Conv2dOptions& opts,
                     Tensor& y, Tensor& workspace);
Status Conv2dBackward(const Tensor& x, const Tensor& w, const Tensor& dy,
                      const Conv2dOptions& opts, Tensor* dx, Tensor& dw, Tensor* db,
                      Tensor& workspace);
Status Pool2dForward(const Tensor& x, const Pool2dOptions& opts, Tensor& y, Tensor* indices);
Status Pool2dBackward(const Tensor& dy, const Tensor* indices, const Pool2dOptions& opts,
                      Tensor& dx);

// ---- loss.h ----
Status CrossEntropyForward(const Tensor& logits, const Tensor& targets, Tensor& probs,
                           Tensor& loss);
Status CrossEntropyBackward(const Tensor& probs, const Tensor& targets, float scale,
                            Tensor& dlogits);
Status MseForward(const Tensor& pred, const Tensor& target, Tensor& loss);
Status MseBackward(const Tensor& pred, const Tensor& target, float scale, Tensor& dpred);
Status HingeForward(const Tensor& scores, const Tensor& targets, Tensor& loss);
Status HingeBackward(const Tensor& scores, const Tensor& targets, float scale, Tensor& dscores);

// ---- optim.h ----
Status SgdUpdate(Tensor& param, const Tensor& grad, Tensor* momentum_buf, const SgdOptions& opts);
Status AdamUpdate(Tensor& param, const Tensor& grad, Tensor& m, Tensor& v,
                  const AdamOptions& opts);
StatusOr<float> L2Norm(const Tensor& t);
StatusOr<float> ClipGradNorm(Tensor& grad, float max_norm);

}  // namespace gantry::kernels::cpu
