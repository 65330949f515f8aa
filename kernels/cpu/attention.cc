// CPU causal multi-head attention: per (batch, head) GEMMs with strides straight into the
// qkv / out buffers (no reshapes or copies), blocked so the masked upper triangle is mostly
// never computed; causal softmax on the lower triangle only.
// Parallel over (batch, head) pairs (thread-pool chunks); each pair's GEMMs run on one thread.
#include <algorithm>
#include <cmath>
#include <mutex>

#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/parallel.h"
#include "kernels/cpu/vec_math.h"

namespace gantry::kernels::cpu {

namespace {

constexpr double kFlopsPerThread = 2e6;  // one (b, h) pair of gpt-tiny is ~4 MFLOP
// Rows of the score matrix per causal GEMM block: smaller skips more of the masked upper
// triangle but makes more (tiny) GEMM calls; 32 measured best for T = 128, D = 64.
constexpr int64_t kRowBlock = 32;

struct Geometry {
  int64_t b, t, c, h, d;
  int64_t ld_qkv() const { return 3 * c; }
};

Geometry GeometryOf(const Tensor& qkv, int heads) {
  const int64_t c = qkv.dim(2) / 3;
  return {qkv.dim(0), qkv.dim(1), c, heads, c / heads};
}

// Row i of a [T, T] score block: probabilities over j <= i, zeros above the diagonal.
void CausalSoftmaxRows(float* s, int64_t t) {
  for (int64_t i = 0; i < t; ++i) {
    float* row = s + i * t;
    const int64_t n = i + 1;
    float mx = -INFINITY;
#pragma omp simd reduction(max : mx)
    for (int64_t j = 0; j < n; ++j) mx = row[j] > mx ? row[j] : mx;
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (int64_t j = 0; j < n; ++j) {
      row[j] = FastExp(row[j] - mx);
      sum += row[j];
    }
    const float inv = 1.0f / sum;
#pragma omp simd
    for (int64_t j = 0; j < n; ++j) row[j] *= inv;
    for (int64_t j = n; j < t; ++j) row[j] = 0.0f;
  }
}

// Runs fn(pair) for every (batch, head) pair, in parallel when worth it; first error wins.
template <typename Fn>
Status ForEachPair(const Geometry& g, Fn fn) {
  const int64_t pairs = g.b * g.h;
  const double flops = 4.0 * double(g.t) * double(g.t) * double(g.d) * double(pairs);
  const int threads = ThreadsFor(flops, kFlopsPerThread);
  Status first;
  std::mutex mu;
  ParallelChunks(pairs, threads, [&](int64_t p) {  // one pair per chunk: ~64 chunks
    Status s = fn(p / g.h, p % g.h);
    if (!s.ok()) {
      std::lock_guard<std::mutex> lock(mu);
      if (first.ok()) first = s;
    }
  });
  return first;
}

}  // namespace

Status CausalSelfAttentionForward(const Tensor& qkv, int heads, Tensor& out, Tensor& att) {
  const Geometry g = GeometryOf(qkv, heads);
  const float scale = 1.0f / std::sqrt(static_cast<float>(g.d));
  const float* base = qkv.f32();
  float* op = out.f32();
  float* ap = att.f32();
  return ForEachPair(g, [&](int64_t b, int64_t h) -> Status {
    const float* q = base + b * g.t * g.ld_qkv() + h * g.d;
    const float* k = q + g.c;
    const float* v = q + 2 * g.c;
    float* s = ap + (b * g.h + h) * g.t * g.t;
    float* o = op + b * g.t * g.c + h * g.d;
    // S = scale * Q K^T on the causal block-rows only, P = causal softmax(S) in place (zeroes
    // everything above the diagonal), then out_h = P V, again skipping the zero blocks.
    for (int64_t i0 = 0; i0 < g.t; i0 += kRowBlock) {
      const int64_t rows = std::min(kRowBlock, g.t - i0), cols = i0 + rows;
      GANTRY_RETURN_IF_ERROR(Sgemm(false, true, rows, cols, g.d, scale, q + i0 * g.ld_qkv(),
                                   g.ld_qkv(), k, g.ld_qkv(), 0.0f, s + i0 * g.t, g.t));
    }
    CausalSoftmaxRows(s, g.t);
    for (int64_t i0 = 0; i0 < g.t; i0 += kRowBlock) {
      const int64_t rows = std::min(kRowBlock, g.t - i0), cols = i0 + rows;
      GANTRY_RETURN_IF_ERROR(Sgemm(false, false, rows, g.d, cols, 1.0f, s + i0 * g.t, g.t, v,
                                   g.ld_qkv(), 0.0f, o + i0 * g.c, g.c));
    }
    return OkStatus();
  });
}

Status CausalSelfAttentionBackward(const Tensor& qkv, const Tensor& att, const Tensor& dout,
                                   int heads, Tensor& dqkv, Tensor& datt) {
  const Geometry g = GeometryOf(qkv, heads);
  const float scale = 1.0f / std::sqrt(static_cast<float>(g.d));
  const int64_t ld = g.ld_qkv();
  return ForEachPair(g, [&](int64_t b, int64_t h) -> Status {
    const float* q = qkv.f32() + b * g.t * ld + h * g.d;
    const float* k = q + g.c;
    const float* v = q + 2 * g.c;
    float* dq = dqkv.f32() + b * g.t * ld + h * g.d;
    float* dk = dq + g.c;
    float* dv = dq + 2 * g.c;
    const float* p = att.f32() + (b * g.h + h) * g.t * g.t;
    float* dp = datt.f32() + (b * g.h + h) * g.t * g.t;
    const float* go = dout.f32() + b * g.t * g.c + h * g.d;
    // Row block [i0, i0 + rows) only meets columns < i0 + rows; column block [j0, ..) only
    // meets rows >= j0 (P and dS are 0 above the diagonal).
    for (int64_t i0 = 0; i0 < g.t; i0 += kRowBlock) {  // dP = dO V^T
      const int64_t rows = std::min(kRowBlock, g.t - i0), cols = i0 + rows;
      GANTRY_RETURN_IF_ERROR(Sgemm(false, true, rows, cols, g.d, 1.0f, go + i0 * g.c, g.c, v, ld,
                                   0.0f, dp + i0 * g.t, g.t));
    }
    for (int64_t j0 = 0; j0 < g.t; j0 += kRowBlock) {  // dV = P^T dO
      const int64_t cols = std::min(kRowBlock, g.t - j0);
      GANTRY_RETURN_IF_ERROR(Sgemm(true, false, cols, g.d, g.t - j0, 1.0f, p + j0 * g.t + j0, g.t,
                                   go + j0 * g.c, g.c, 0.0f, dv + j0 * ld, ld));
    }
    // dS = P * (dP - rowsum(dP * P)) on the lower triangle, zeros above it.
    for (int64_t i = 0; i < g.t; ++i) {
      const float* pr = p + i * g.t;
      float* dr = dp + i * g.t;
      const int64_t n = i + 1;
      float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
      for (int64_t j = 0; j < n; ++j) dot += pr[j] * dr[j];
#pragma omp simd
      for (int64_t j = 0; j < n; ++j) dr[j] = pr[j] * (dr[j] - dot);
      for (int64_t j = n; j < g.t; ++j) dr[j] = 0.0f;
    }
    for (int64_t i0 = 0; i0 < g.t; i0 += kRowBlock) {  // dQ = scale * dS K
      const int64_t rows = std::min(kRowBlock, g.t - i0), cols = i0 + rows;
      GANTRY_RETURN_IF_ERROR(Sgemm(false, false, rows, g.d, cols, scale, dp + i0 * g.t, g.t, k, ld,
                                   0.0f, dq + i0 * ld, ld));
    }
    for (int64_t j0 = 0; j0 < g.t; j0 += kRowBlock) {  // dK = scale * dS^T Q
      const int64_t cols = std::min(kRowBlock, g.t - j0);
      GANTRY_RETURN_IF_ERROR(Sgemm(true, false, cols, g.d, g.t - j0, scale, dp + j0 * g.t + j0, g.t,
                                   q + j0 * ld, ld, 0.0f, dk + j0 * ld, ld));
    }
    return OkStatus();
  });
}

}  // namespace gantry::kernels::cpu
