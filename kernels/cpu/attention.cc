// CPU causal multi-head attention: per (batch, head) pair, register-blocked small GEMMs
// (small_gemm.h) with strides straight into the qkv / out buffers (only K^T or V^T is copied,
// 32 KiB per pair), walked in row tiles of kSmallGemmRows so the masked upper triangle is
// never computed and each tile's scores stay in L1 from the product through the softmax to
// P V (oneDNN's per-call set-up and packing are a large share of products this small).
// Parallel over (batch, head) pairs (thread-pool chunks); each pair runs on one thread.
#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/attention_rows.h"
#include "kernels/cpu/parallel.h"
#include "kernels/cpu/small_gemm.h"

namespace gantry::kernels::cpu {

namespace {

constexpr double kFlopsPerThread = 2e6;  // one (b, h) pair of gpt-tiny is ~4 MFLOP
// Rows of dS the backward keeps at a time: the k of its dK / dV updates (32 x T floats in L1).
constexpr int64_t kBackwardBlock = 32;

// Per-thread scratch for one pair's K^T or V^T ([D, T]); grows to the largest, then reused.
float* PairScratch(int64_t elems) {
  thread_local std::vector<float> scratch;
  if (scratch.size() < size_t(elems)) scratch.resize(size_t(elems));
  return scratch.data();
}

struct Geometry {
  int64_t b, t, c, h, d;
  int64_t ld_qkv() const { return 3 * c; }
};

Geometry GeometryOf(const Tensor& qkv, int heads) {
  const int64_t c = qkv.dim(2) / 3;
  return {qkv.dim(0), qkv.dim(1), c, heads, c / heads};
}

// Runs fn(batch, head) for every (batch, head) pair, in parallel when worth it.
template <typename Fn>
void ForEachPair(const Geometry& g, Fn fn) {
  const int64_t pairs = g.b * g.h;
  const double flops = 4.0 * double(g.t) * double(g.t) * double(g.d) * double(pairs);
  const int threads = ThreadsFor(flops, kFlopsPerThread);
  ParallelChunks(pairs, threads, [&](int64_t p) { fn(p / g.h, p % g.h); });  // ~64 chunks
}

}  // namespace

Status CausalSelfAttentionForward(const Tensor& qkv, int heads, Tensor& out, Tensor& att) {
  const Geometry g = GeometryOf(qkv, heads);
  const float scale = 1.0f / std::sqrt(static_cast<float>(g.d));
  const int64_t ld = g.ld_qkv();
  const float* base = qkv.f32();
  float* op = out.f32();
  float* ap = att.f32();
  ForEachPair(g, [&](int64_t b, int64_t h) {
    const float* q = base + b * g.t * ld + h * g.d;
    const float* k = q + g.c;
    const float* v = q + 2 * g.c;
    float* s = ap + (b * g.h + h) * g.t * g.t;
    float* o = op + b * g.t * g.c + h * g.d;
    float* kt = PairScratch(g.d * g.t);
    TransposeInto(k, g.t, g.d, ld, kt, g.t);  // K^T [D, T]: S = Q K^T reads B row-major
    // Per row tile (in L1 throughout): S = scale * Q K^T up to the diagonal, P = causal
    // softmax(S) in place (zeros above the diagonal), out_h = P V over the same columns.
    for (int64_t i0 = 0; i0 < g.t; i0 += kSmallGemmRows) {
      const int64_t rows = std::min(kSmallGemmRows, g.t - i0), cols = i0 + rows;
      SmallGemm(rows, cols, g.d, scale, q + i0 * ld, ld, 1, kt, g.t, s + i0 * g.t, g.t);
      CausalSoftmaxRows(s, g.t, i0, i0 + rows);
      SmallGemm(rows, g.d, cols, 1.0f, s + i0 * g.t, g.t, 1, v, ld, o + i0 * g.c, g.c);
    }
  });
  return OkStatus();
}

Status CausalSelfAttentionBackward(const Tensor& qkv, const Tensor& att, const Tensor& dout,
                                   int heads, Tensor& dqkv, Tensor& /*datt: unused on CPU*/) {
  const Geometry g = GeometryOf(qkv, heads);
  const float scale = 1.0f / std::sqrt(static_cast<float>(g.d));
  const int64_t ld = g.ld_qkv();
  ForEachPair(g, [&](int64_t b, int64_t h) {
    const float* q = qkv.f32() + b * g.t * ld + h * g.d;
    const float* k = q + g.c;
    const float* v = q + 2 * g.c;
    float* dq = dqkv.f32() + b * g.t * ld + h * g.d;
    float* dk = dq + g.c;
    float* dv = dq + 2 * g.c;
    const float* p = att.f32() + (b * g.h + h) * g.t * g.t;
    const float* go = dout.f32() + b * g.t * g.c + h * g.d;
    float* vt = PairScratch(g.d * g.t + kBackwardBlock * g.t);
    float* ds = vt + g.d * g.t;  // dS of one row block, [kBackwardBlock, T]
    TransposeInto(v, g.t, g.d, ld, vt, g.t);  // V^T [D, T]
    // One pass over row blocks; dS never leaves this block's buffer (in L1).
    for (int64_t i0 = 0; i0 < g.t; i0 += kBackwardBlock) {
      const int64_t rows = std::min(kBackwardBlock, g.t - i0), cols = i0 + rows;
      // Row tiles: dP = dO V^T up to the diagonal, dS = P * (dP - rowsum(dP * P)) (zeros
      // above the diagonal, up to the block's last column), dQ = scale * dS K.
      for (int64_t t0 = i0; t0 < i0 + rows; t0 += kSmallGemmRows) {
        const int64_t tr = std::min(kSmallGemmRows, i0 + rows - t0), tc = t0 + tr;
        float* dst = ds + (t0 - i0) * g.t;
        SmallGemm(tr, tc, g.d, 1.0f, go + t0 * g.c, g.c, 1, vt, g.t, dst, g.t);
        CausalSoftmaxBackwardRows(p, g.t, dst, g.t, t0, t0 + tr, cols);
        SmallGemm(tr, g.d, tc, scale, dst, g.t, 1, k, ld, dq + t0 * ld, ld);
      }
      // dV[0, cols) += P_blk^T dO_blk and dK[0, cols) += scale * dS_blk^T Q_blk (P and dS
      // read transposed; both are zero above the diagonal). Rows [0, i0) accumulate onto the
      // earlier blocks' sums; rows [i0, cols) are first written here (no zero-fill pass).
      const float* p_blk = p + i0 * g.t;
      SmallGemm(i0, g.d, rows, 1.0f, p_blk, 1, g.t, go + i0 * g.c, g.c, dv, ld, true);
      SmallGemm(rows, g.d, rows, 1.0f, p_blk + i0, 1, g.t, go + i0 * g.c, g.c, dv + i0 * ld, ld);
      SmallGemm(i0, g.d, rows, scale, ds, 1, g.t, q + i0 * ld, ld, dk, ld, true);
      SmallGemm(rows, g.d, rows, scale, ds + i0, 1, g.t, q + i0 * ld, ld, dk + i0 * ld, ld);
    }
  });
  return OkStatus();
}

}  // namespace gantry::kernels::cpu
