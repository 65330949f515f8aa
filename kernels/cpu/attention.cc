// CPU causal multi-head attention: per (batch, head) GEMMs with strides straight into the
// qkv / out buffers (no reshapes or copies), causal softmax on the lower triangle only.
// Parallel over (batch, head) pairs; each pair's GEMMs then run single-threaded.
#include <cmath>
#include <mutex>

#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/vec_math.h"

namespace gantry::kernels::cpu {

namespace {

constexpr double kFlopsPerThread = 2e6;  // one (b, h) pair of gpt-tiny is ~4 MFLOP

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
#pragma omp parallel for num_threads(threads) if (threads > 1) schedule(static)
  for (int64_t p = 0; p < pairs; ++p) {
    Status s = fn(p / g.h, p % g.h);
    if (!s.ok()) {
      std::lock_guard<std::mutex> lock(mu);
      if (first.ok()) first = s;
    }
  }
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
    // S = scale * Q K^T, then P = causal softmax(S) in place; out_h = P V.
    GANTRY_RETURN_IF_ERROR(
        Sgemm(false, true, g.t, g.t, g.d, scale, q, g.ld_qkv(), k, g.ld_qkv(), 0.0f, s, g.t));
    CausalSoftmaxRows(s, g.t);
    return Sgemm(false, false, g.t, g.d, g.t, 1.0f, s, g.t, v, g.ld_qkv(), 0.0f,
                 op + b * g.t * g.c + h * g.d, g.c);
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
    // dP = dO V^T; dV = P^T dO.
    GANTRY_RETURN_IF_ERROR(Sgemm(false, true, g.t, g.t, g.d, 1.0f, go, g.c, v, ld, 0.0f, dp, g.t));
    GANTRY_RETURN_IF_ERROR(Sgemm(true, false, g.t, g.d, g.t, 1.0f, p, g.t, go, g.c, 0.0f, dv, ld));
    // dS = P * (dP - rowsum(dP * P)) on the lower triangle (P is 0 above it).
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
    // dQ = scale * dS K; dK = scale * dS^T Q.
    GANTRY_RETURN_IF_ERROR(Sgemm(false, false, g.t, g.d, g.t, scale, dp, g.t, k, ld, 0.0f, dq, ld));
    return Sgemm(true, false, g.t, g.d, g.t, scale, dp, g.t, q, ld, 0.0f, dk, ld);
  });
}

}  // namespace gantry::kernels::cpu
