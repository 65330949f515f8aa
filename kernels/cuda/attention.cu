// Causal self-attention on CUDA: per-head GEMMs as cuBLAS strided-batched calls straight on the
// [B, T, 3C] layout (no permute copies), with causal masked-softmax kernels between them.
// Scores are computed for the full T x T square and masked (simple; flash attention is future).
#include <cuda_runtime.h>

#include <cmath>
#include <string>

#include "kernels/cuda/check.h"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/context.h"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/gemm.h"

namespace gantry::kernels::cuda {
namespace {

constexpr int kWarpsPerBlock = 8;

// A [rows, cols] matrix per (batch b, head h) at base + b * sb + h * sh, row stride ld.
struct HeadMat {
  const float* base;
  int64_t sb, sh, ld;
  float* mut() const { return const_cast<float*>(base); }
};

struct Dims {
  int64_t batch, seq, channels, heads, head_dim;
};

// C_bh = alpha * op(A_bh) op(B_bh) + beta * C_bh for every (b, h): loops over the smaller of
// batch/heads and batches the other through one strided-batched call. Always f32, also with
// SetCudaMatmulPrecision(kBf16): the CPU's attention keeps its per-head products in f32, so
// both backends round the same products (kernels/runtime.h).
Status HeadGemm(const OpEnv& env, const Dims& d, bool ta, bool tb, int64_t m, int64_t n,
                int64_t k, float alpha, const HeadMat& a, const HeadMat& b, float beta,
                const HeadMat& c) {
  const bool loop_batch = d.batch <= d.heads;
  const int64_t loops = loop_batch ? d.batch : d.heads;
  RowMajorGemm g;
  g.trans_a = ta;
  g.trans_b = tb;
  g.m = m;
  g.n = n;
  g.k = k;
  g.alpha = alpha;
  g.beta = beta;
  g.lda = a.ld;
  g.ldb = b.ld;
  g.ldc = c.ld;
  g.batch = loop_batch ? d.heads : d.batch;
  g.allow_bf16 = false;
  g.stride_a = loop_batch ? a.sh : a.sb;
  g.stride_b = loop_batch ? b.sh : b.sb;
  g.stride_c = loop_batch ? c.sh : c.sb;
  for (int64_t i = 0; i < loops; ++i) {
    g.a = a.base + i * (loop_batch ? a.sb : a.sh);
    g.b = b.base + i * (loop_batch ? b.sb : b.sh);
    g.c = c.mut() + i * (loop_batch ? c.sb : c.sh);
    GANTRY_RETURN_IF_ERROR(GemmRowMajor(env.ctx, env.stream, g));
  }
  return OkStatus();
}

// Row r of att [B*NH*T, T] is query position t = r % T: softmax over columns [0, t], zero above.
__global__ void CausalSoftmaxKernel(float* att, int64_t rows, int64_t seq) {
  const int64_t r = int64_t(blockIdx.x) * kWarpsPerBlock + threadIdx.x / 32;
  if (r >= rows) return;
  const int lane = threadIdx.x % 32;
  const int64_t valid = r % seq + 1;
  float* row = att + r * seq;
  float m = -INFINITY;
  for (int64_t c = lane; c < valid; c += 32) m = fmaxf(m, row[c]);
  m = WarpMax(m);
  float s = 0.0f;
  for (int64_t c = lane; c < valid; c += 32) s += expf(row[c] - m);
  const float inv = 1.0f / WarpSum(s);
  for (int64_t c = lane; c < seq; c += 32) row[c] = c < valid ? expf(row[c] - m) * inv : 0.0f;
}

// datt <- scale * att * (datt - sum(datt * att)) on [0, t]; zero above the diagonal.
__global__ void CausalSoftmaxBackwardKernel(const float* att, float* datt, int64_t rows,
                                            int64_t seq, float scale) {
  const int64_t r = int64_t(blockIdx.x) * kWarpsPerBlock + threadIdx.x / 32;
  if (r >= rows) return;
  const int lane = threadIdx.x % 32;
  const int64_t valid = r % seq + 1;
  const float* p = att + r * seq;
  float* dp = datt + r * seq;
  float dot = 0.0f;
  for (int64_t c = lane; c < valid; c += 32) dot += p[c] * dp[c];
  dot = WarpSum(dot);
  for (int64_t c = lane; c < seq; c += 32) {
    dp[c] = c < valid ? scale * p[c] * (dp[c] - dot) : 0.0f;
  }
}

StatusOr<Dims> AttentionDims(const char* op, const Tensor& qkv, int heads) {
  if (qkv.rank() != 3 || heads <= 0 || qkv.dim(2) % (3 * heads) != 0) {
    return InvalidArgumentError(std::string(op) + ": qkv " + qkv.ToString() +
                                " must be [B, T, 3C] with C divisible by heads=" +
                                std::to_string(heads));
  }
  const int64_t c = qkv.dim(2) / 3;
  return Dims{qkv.dim(0), qkv.dim(1), c, heads, c / heads};
}

Status CheckNumel(const char* op, const char* name, const Tensor& t, const OpEnv& env,
                  int64_t numel) {
  GANTRY_RETURN_IF_ERROR(CheckOperand(op, name, t, env));
  if (t.numel() != numel) {
    return InvalidArgumentError(std::string(op) + ": " + name + " " + t.ToString() +
                                " must hold " + std::to_string(numel) + " elements");
  }
  return OkStatus();
}

unsigned RowGrid(int64_t rows) {
  return static_cast<unsigned>((rows + kWarpsPerBlock - 1) / kWarpsPerBlock);
}

}  // namespace

Status CausalSelfAttentionForward(const Tensor& qkv, int heads, Tensor& out, Tensor& att) {
  constexpr const char* kOp = "CausalSelfAttentionForward";
  GANTRY_ASSIGN_OR_RETURN(OpEnv env, BeginOp(kOp, qkv));
  GANTRY_ASSIGN_OR_RETURN(Dims d, AttentionDims(kOp, qkv, heads));
  const int64_t B = d.batch, T = d.seq, C = d.channels, NH = d.heads, D = d.head_dim;
  GANTRY_RETURN_IF_ERROR(CheckOperand(kOp, "qkv", qkv, env));
  GANTRY_RETURN_IF_ERROR(CheckNumel(kOp, "out", out, env, B * T * C));
  GANTRY_RETURN_IF_ERROR(CheckNumel(kOp, "att", att, env, B * NH * T * T));
  if (B * T * C == 0) return OkStatus();
  const float* p = qkv.f32();
  const HeadMat q{p, T * 3 * C, D, 3 * C}, k{p + C, T * 3 * C, D, 3 * C},
      v{p + 2 * C, T * 3 * C, D, 3 * C};
  const HeadMat a{att.f32(), NH * T * T, T * T, T}, o{out.f32(), T * C, D, C};
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  // att = scale * q k^T; softmax with the causal mask; out = att v.
  GANTRY_RETURN_IF_ERROR(HeadGemm(env, d, false, true, T, T, D, scale, q, k, 0.0f, a));
  CausalSoftmaxKernel<<<RowGrid(B * NH * T), kWarpsPerBlock * 32, 0, env.stream>>>(
      att.f32(), B * NH * T, T);
  GANTRY_CUDA_CHECK_LAUNCH("CausalSoftmaxKernel");
  return HeadGemm(env, d, false, false, T, D, T, 1.0f, a, v, 0.0f, o);
}

Status CausalSelfAttentionBackward(const Tensor& qkv, const Tensor& att, const Tensor& dout,
                                   int heads, Tensor& dqkv, Tensor& datt) {
  constexpr const char* kOp = "CausalSelfAttentionBackward";
  GANTRY_ASSIGN_OR_RETURN(OpEnv env, BeginOp(kOp, qkv));
  GANTRY_ASSIGN_OR_RETURN(Dims d, AttentionDims(kOp, qkv, heads));
  const int64_t B = d.batch, T = d.seq, C = d.channels, NH = d.heads, D = d.head_dim;
  GANTRY_RETURN_IF_ERROR(CheckOperand(kOp, "qkv", qkv, env));
  GANTRY_RETURN_IF_ERROR(CheckNumel(kOp, "att", att, env, B * NH * T * T));
  GANTRY_RETURN_IF_ERROR(CheckNumel(kOp, "dout", dout, env, B * T * C));
  GANTRY_RETURN_IF_ERROR(CheckNumel(kOp, "dqkv", dqkv, env, B * T * 3 * C));
  GANTRY_RETURN_IF_ERROR(CheckNumel(kOp, "datt", datt, env, B * NH * T * T));
  if (B * T * C == 0) return OkStatus();
  const float* p = qkv.f32();
  float* dp = dqkv.f32();
  const HeadMat q{p, T * 3 * C, D, 3 * C}, k{p + C, T * 3 * C, D, 3 * C},
      v{p + 2 * C, T * 3 * C, D, 3 * C};
  const HeadMat dq{dp, T * 3 * C, D, 3 * C}, dk{dp + C, T * 3 * C, D, 3 * C},
      dv{dp + 2 * C, T * 3 * C, D, 3 * C};
  const HeadMat a{att.f32(), NH * T * T, T * T, T}, da{datt.f32(), NH * T * T, T * T, T};
  const HeadMat go{dout.f32(), T * C, D, C};
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  // datt = dout v^T; dv = att^T dout.
  GANTRY_RETURN_IF_ERROR(HeadGemm(env, d, false, true, T, T, D, 1.0f, go, v, 0.0f, da));
  GANTRY_RETURN_IF_ERROR(HeadGemm(env, d, true, false, T, D, T, 1.0f, a, go, 0.0f, dv));
  // Through the softmax (and the 1/sqrt(D) scale): datt becomes dscores.
  CausalSoftmaxBackwardKernel<<<RowGrid(B * NH * T), kWarpsPerBlock * 32, 0, env.stream>>>(
      att.f32(), datt.f32(), B * NH * T, T, scale);
  GANTRY_CUDA_CHECK_LAUNCH("CausalSoftmaxBackwardKernel");
  // dq = dscores k; dk = dscores^T q.
  GANTRY_RETURN_IF_ERROR(HeadGemm(env, d, false, false, T, D, T, 1.0f, da, k, 0.0f, dq));
  return HeadGemm(env, d, true, false, T, D, T, 1.0f, da, q, 0.0f, dk);
}

}  // namespace gantry::kernels::cuda
