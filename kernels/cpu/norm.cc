// CPU softmax and LayerNorm over the last dim: one task per row block, vectorised rows.
// LayerNorm backward accumulates dgamma/dbeta in per-chunk partials merged in chunk order.
#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/parallel.h"
#include "kernels/cpu/vec_math.h"

namespace gantry::kernels::cpu {

namespace {
constexpr double kElementsPerThread = 1 << 15;
constexpr int64_t kLayerNormRowsPerChunk = 32;  // LayerNorm backward rows per chunk/partial
}  // namespace

// y[0..n) = softmax(x[0..n)); shared with cross-entropy and attention through this file only.
static inline float SoftmaxRow(const float* x, float* y, int64_t n) {
  float mx = -INFINITY;
#pragma omp simd reduction(max : mx)
  for (int64_t j = 0; j < n; ++j) mx = x[j] > mx ? x[j] : mx;
  float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
  for (int64_t j = 0; j < n; ++j) {
    y[j] = FastExp(x[j] - mx);
    sum += y[j];
  }
  const float inv = 1.0f / sum;
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) y[j] *= inv;
  return mx;
}

Status SoftmaxForward(const Tensor& x, Tensor& y) {
  const int64_t n = x.dim(-1), rows = x.numel() / n;
  const float* xp = x.f32();
  float* yp = y.f32();
  const int threads = ThreadsFor(double(rows) * n, kElementsPerThread);
  ParallelFor(rows, threads, [=](int64_t r_begin, int64_t r_end) {
    for (int64_t r = r_begin; r < r_end; ++r) SoftmaxRow(xp + r * n, yp + r * n, n);
  });
  return OkStatus();
}

Status SoftmaxBackward(const Tensor& y, const Tensor& dy, Tensor& dx) {
  const int64_t n = y.dim(-1), rows = y.numel() / n;
  const float* yp = y.f32();
  const float* gp = dy.f32();
  float* dp = dx.f32();
  const int threads = ThreadsFor(double(rows) * n, kElementsPerThread);
  ParallelFor(rows, threads, [=](int64_t r_begin, int64_t r_end) {
    for (int64_t r = r_begin; r < r_end; ++r) {
      const float* yr = yp + r * n;
      const float* gr = gp + r * n;
      float* dr = dp + r * n;
      float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
      for (int64_t j = 0; j < n; ++j) dot += yr[j] * gr[j];
#pragma omp simd
      for (int64_t j = 0; j < n; ++j) dr[j] = yr[j] * (gr[j] - dot);
    }
  });
  return OkStatus();
}

namespace {
GANTRY_AVX512_CLONES void LayerNormRows(const float* xp, const float* g, const float* b, float eps,
                                        int64_t c, float* yp, float* mp, float* rp,
                                        int64_t r_begin, int64_t r_end) {
  const float inv_c = 1.0f / static_cast<float>(c);
  for (int64_t r = r_begin; r < r_end; ++r) {
    const float* xr = xp + r * c;
    float* yr = yp + r * c;
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (int64_t j = 0; j < c; ++j) sum += xr[j];
    const float mu = sum * inv_c;
    float var = 0.0f;
#pragma omp simd reduction(+ : var)
    for (int64_t j = 0; j < c; ++j) var += (xr[j] - mu) * (xr[j] - mu);
    const float rs = 1.0f / std::sqrt(var * inv_c + eps);
#pragma omp simd
    for (int64_t j = 0; j < c; ++j) yr[j] = (xr[j] - mu) * rs * g[j] + b[j];
    mp[r] = mu;
    rp[r] = rs;
  }
}

// dx rows [r_begin, r_end) and this chunk's dgamma / dbeta partials (pg, pb).
GANTRY_AVX512_CLONES void LayerNormBackwardRows(const float* xp, const float* g, const float* mp,
                                                const float* rp, const float* gp, int64_t c,
                                                float* dp, float* pg, float* pb, int64_t r_begin,
                                                int64_t r_end) {
  const float inv_c = 1.0f / static_cast<float>(c);
  for (int64_t r = r_begin; r < r_end; ++r) {
    const float* xr = xp + r * c;
    const float* gr = gp + r * c;
    float* dr = dp + r * c;
    const float mu = mp[r], rs = rp[r];
    float sum_g = 0.0f, sum_gx = 0.0f;
#pragma omp simd reduction(+ : sum_g, sum_gx)
    for (int64_t j = 0; j < c; ++j) {
      const float xhat = (xr[j] - mu) * rs;
      const float gj = gr[j] * g[j];
      sum_g += gj;
      sum_gx += gj * xhat;
      pg[j] += gr[j] * xhat;
      pb[j] += gr[j];
    }
    const float mean_g = sum_g * inv_c, mean_gx = sum_gx * inv_c;
#pragma omp simd
    for (int64_t j = 0; j < c; ++j) {
      const float xhat = (xr[j] - mu) * rs;
      dr[j] = rs * (gr[j] * g[j] - mean_g - xhat * mean_gx);
    }
  }
}
}  // namespace

Status LayerNormForward(const Tensor& x, const Tensor& gamma, const Tensor& beta, float eps,
                        Tensor& y, Tensor& mean, Tensor& rstd) {
  const int64_t c = x.dim(-1), rows = x.numel() / c;
  const float* xp = x.f32();
  const float* g = gamma.f32();
  const float* b = beta.f32();
  float* yp = y.f32();
  float* mp = mean.f32();
  float* rp = rstd.f32();
  const int threads = ThreadsFor(double(rows) * c, kElementsPerThread);
  ParallelFor(rows, threads, [=](int64_t r_begin, int64_t r_end) {
    LayerNormRows(xp, g, b, eps, c, yp, mp, rp, r_begin, r_end);
  });
  return OkStatus();
}

Status LayerNormBackward(const Tensor& x, const Tensor& gamma, const Tensor& mean,
                         const Tensor& rstd, const Tensor& dy, Tensor& dx, Tensor& dgamma,
                         Tensor& dbeta) {
  const int64_t c = x.dim(-1), rows = x.numel() / c;
  const float* xp = x.f32();
  const float* g = gamma.f32();
  const float* mp = mean.f32();
  const float* rp = rstd.f32();
  const float* gp = dy.f32();
  float* dp = dx.f32();
  float* dg = dgamma.f32();
  float* db = dbeta.f32();
  const int threads = ThreadsFor(double(rows) * c, kElementsPerThread);
  // One [dgamma | dbeta] partial per chunk of rows, merged in chunk order: reproducible.
  const int64_t chunks = (rows + kLayerNormRowsPerChunk - 1) / kLayerNormRowsPerChunk;
  thread_local std::vector<float> partials;  // on the calling thread; grows once
  partials.assign(chunks * 2 * c, 0.0f);
  float* pp = partials.data();
  ParallelChunks(chunks, threads, [&](int64_t chunk) {
    float* pg = pp + chunk * 2 * c;
    const int64_t r_end = std::min(rows, (chunk + 1) * kLayerNormRowsPerChunk);
    LayerNormBackwardRows(xp, g, mp, rp, gp, c, dp, pg, pg + c, chunk * kLayerNormRowsPerChunk,
                          r_end);
  });
  for (int64_t chunk = 0; chunk < chunks; ++chunk) {
    const float* pg = pp + chunk * 2 * c;
#pragma omp simd
    for (int64_t j = 0; j < c; ++j) {
      dg[j] += pg[j];
      db[j] += pg[c + j];
    }
  }
  return OkStatus();
}

}  // namespace gantry::kernels::cpu
