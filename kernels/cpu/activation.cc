// CPU activations: branch-free vectorised loops (kernels/cpu/vec_math.h), one pass each; the
// loop bodies are range functions compiled for AVX-512 too (GANTRY_AVX512_CLONES).
#include <algorithm>
#include <vector>

#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/parallel.h"
#include "kernels/cpu/vec_math.h"

namespace gantry::kernels::cpu {

namespace {
constexpr double kElementsPerThread = 1 << 15;  // transcendental work per extra thread

GANTRY_AVX512_CLONES void ForwardRange(Activation act, const float* xp, float* yp, int64_t begin,
                                       int64_t end) {
  switch (act) {
    case Activation::kRelu:
      for (int64_t i = begin; i < end; ++i) yp[i] = xp[i] > 0.0f ? xp[i] : 0.0f;
      break;
    case Activation::kSigmoid:
      for (int64_t i = begin; i < end; ++i) yp[i] = FastSigmoid(xp[i]);
      break;
    case Activation::kTanh:
      for (int64_t i = begin; i < end; ++i) yp[i] = FastTanh(xp[i]);
      break;
    case Activation::kGelu:
      for (int64_t i = begin; i < end; ++i) {  // 0.5 v (1 + tanh u) = v * sigmoid(2u)
        const float v = xp[i];
        const float u2 = 2.0f * kGeluK0 * (v + kGeluK1 * v * v * v);
        yp[i] = v / (1.0f + FastExp(-u2));
      }
      break;
  }
}

GANTRY_AVX512_CLONES void BackwardRange(Activation act, const float* xp, const float* yp,
                                        const float* gp, float* dp, int64_t begin, int64_t end) {
  switch (act) {
    case Activation::kRelu:
      for (int64_t i = begin; i < end; ++i) {
        const float g = gp[i];  // loaded unconditionally so the select vectorises
        dp[i] = xp[i] > 0.0f ? g : 0.0f;
      }
      break;
    case Activation::kSigmoid:
      for (int64_t i = begin; i < end; ++i) dp[i] = gp[i] * yp[i] * (1.0f - yp[i]);
      break;
    case Activation::kTanh:
      for (int64_t i = begin; i < end; ++i) dp[i] = gp[i] * (1.0f - yp[i] * yp[i]);
      break;
    case Activation::kGelu:
      for (int64_t i = begin; i < end; ++i) {  // s = sigmoid(2u): f' = s + 2 v s (1 - s) du/dv
        const float v = xp[i];
        const float v2 = v * v;
        const float s = 1.0f / (1.0f + FastExp(-2.0f * kGeluK0 * (v + kGeluK1 * v2 * v)));
        const float du = kGeluK0 * (1.0f + 3.0f * kGeluK1 * v2);
        dp[i] = gp[i] * (s + 2.0f * v * s * (1.0f - s) * du);
      }
      break;
  }
}
}  // namespace

Status ActivationForward(Activation act, const Tensor& x, Tensor& y) {
  const int64_t n = x.numel();
  const float* xp = x.f32();
  float* yp = y.f32();
  const int threads = ThreadsFor(double(n), kElementsPerThread);
  ParallelFor(n, threads, [=](int64_t i_begin, int64_t i_end) {
    ForwardRange(act, xp, yp, i_begin, i_end);
  });
  return OkStatus();
}

Status ActivationBackward(Activation act, const Tensor& x, const Tensor& y, const Tensor& dy,
                          Tensor& dx) {
  const int64_t n = x.numel();
  const float* xp = x.f32();
  const float* yp = y.f32();
  const float* gp = dy.f32();
  float* dp = dx.f32();
  const int threads = ThreadsFor(double(n), kElementsPerThread);
  ParallelFor(n, threads, [=](int64_t i_begin, int64_t i_end) {
    BackwardRange(act, xp, yp, gp, dp, i_begin, i_end);
  });
  return OkStatus();
}

namespace {
constexpr int64_t kColumnBlock = 256;  // as the column sums of kernels/cpu/linear.cc

GANTRY_AVX512_CLONES void AddRow(const float* b, float* z, int64_t n) {
  for (int64_t j = 0; j < n; ++j) z[j] += b[j];
}
GANTRY_AVX512_CLONES void AccumulateRow(const float* d, float* acc, int64_t n) {
  for (int64_t j = 0; j < n; ++j) acc[j] += d[j];
}
}  // namespace

// Per row: bias add in place, then the activation of the row while it is in L1.
Status BiasActivationForward(Activation act, Tensor& z, const Tensor& b, Tensor& y) {
  const int64_t n = z.dim(-1), rows = z.numel() / n;
  float* zp = z.f32();
  float* yp = y.f32();
  const float* bp = b.f32();
  const int threads = ThreadsFor(double(rows) * n, kElementsPerThread);
  ParallelFor(rows, threads, [=](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      AddRow(bp, zp + r * n, n);
      ForwardRange(act, zp, yp, r * n, (r + 1) * n);
    }
  });
  return OkStatus();
}

// Each row's derivative, then its column sums while it is in L1. Every column is summed over
// the rows in order from 0 (as ColumnSumAccumulate, so db gets the same bits): one thread
// streams whole rows into a full-width accumulator; several split the columns into blocks.
Status ActivationBiasBackward(Activation act, const Tensor& z, const Tensor& y, const Tensor& dy,
                              Tensor& dx, Tensor& db) {
  const int64_t n = z.dim(-1), rows = z.numel() / n;
  const float* zp = z.f32();
  const float* yp = y.f32();
  const float* gp = dy.f32();
  float* dp = dx.f32();
  float* dbp = db.f32();
  const int64_t blocks = (n + kColumnBlock - 1) / kColumnBlock;
  const int threads =
      std::min<int>(ThreadsFor(double(rows) * n, kElementsPerThread), int(blocks));
  if (threads <= 1) {
    thread_local std::vector<float> acc;  // grows once, reused
    acc.assign(n, 0.0f);
    for (int64_t r = 0; r < rows; ++r) {
      BackwardRange(act, zp, yp, gp, dp, r * n, (r + 1) * n);
      AccumulateRow(dp + r * n, acc.data(), n);
    }
    for (int64_t j = 0; j < n; ++j) dbp[j] += acc[j];
    return OkStatus();
  }
  ParallelChunks(blocks, threads, [=](int64_t blk) {
    const int64_t j0 = blk * kColumnBlock, w = std::min(n, j0 + kColumnBlock) - j0;
    float acc[kColumnBlock] = {};
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t at = r * n + j0;
      BackwardRange(act, zp, yp, gp, dp, at, at + w);
      AccumulateRow(dp + at, acc, w);
    }
    for (int64_t j = 0; j < w; ++j) dbp[j0 + j] += acc[j];
  });
  return OkStatus();
}

}  // namespace gantry::kernels::cpu
