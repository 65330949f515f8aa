// CPU losses. Cross-entropy is one fused pass per row (max, exp, sum, normalise, -log p[t]);
// loss sums are accumulated in double. Targets are range-checked before anything is written.
#include <algorithm>
#include <cmath>
#include <string>

#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/parallel.h"
#include "kernels/cpu/vec_math.h"

namespace gantry::kernels::cpu {

namespace {

constexpr double kElementsPerThread = 1 << 15;
constexpr int64_t kReduceBlock = 4096;  // elements per vectorised partial sum
constexpr int64_t kRowsPerChunk = 16;   // cross-entropy rows per pool chunk (and loss partial)

Status CheckTargets(const char* op, const Tensor& targets, int64_t classes) {
  const int32_t* tp = targets.i32();
  for (int64_t r = 0; r < targets.numel(); ++r) {
    if (tp[r] < 0 || tp[r] >= classes) {
      return InvalidArgumentError(std::string(op) + ": target " + std::to_string(tp[r]) +
                                  " at row " + std::to_string(r) + " is outside [0, " +
                                  std::to_string(classes) +
                                  "): check the labels against the model's output size");
    }
  }
  return OkStatus();
}

// p = softmax(x) over one row of v logits (p may alias x); returns -log p[target] in double.
GANTRY_AVX512_CLONES double CrossEntropyRow(const float* x, int32_t target, int64_t v, float* p) {
  const float xt = x[target];  // read before p is written
  float mx = -INFINITY;
#pragma omp simd reduction(max : mx)
  for (int64_t j = 0; j < v; ++j) mx = x[j] > mx ? x[j] : mx;
  float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
  for (int64_t j = 0; j < v; ++j) {
    p[j] = FastExp(x[j] - mx);
    sum += p[j];
  }
  const float inv = 1.0f / sum;
#pragma omp simd
  for (int64_t j = 0; j < v; ++j) p[j] *= inv;
  // -log softmax[t] = log(sum) - (x[t] - max), exact even when p[t] underflows.
  return std::log(static_cast<double>(sum)) - (double(xt) - double(mx));
}

}  // namespace

Status CrossEntropyForward(const Tensor& logits, const Tensor& targets, Tensor& probs,
                           Tensor& loss) {
  const int64_t v = logits.dim(-1), rows = logits.numel() / v;
  GANTRY_RETURN_IF_ERROR(CheckTargets("CrossEntropyForward", targets, v));
  const float* xp = logits.f32();
  const int32_t* tp = targets.i32();
  float* pp = probs.f32();
  const int threads = ThreadsFor(double(rows) * v, kElementsPerThread);
  const int64_t chunks = (rows + kRowsPerChunk - 1) / kRowsPerChunk;
  const double total = ParallelSum(chunks, threads, [&](int64_t chunk) {
    double part = 0.0;
    for (int64_t r = chunk * kRowsPerChunk; r < std::min(rows, (chunk + 1) * kRowsPerChunk); ++r) {
      part += CrossEntropyRow(xp + r * v, tp[r], v, pp + r * v);
    }
    return part;
  });
  loss.f32()[0] = static_cast<float>(total / static_cast<double>(rows));
  return OkStatus();
}

Status CrossEntropyBackward(const Tensor& probs, const Tensor& targets, float scale,
                            Tensor& dlogits) {
  const int64_t v = probs.dim(-1), rows = probs.numel() / v;
  GANTRY_RETURN_IF_ERROR(CheckTargets("CrossEntropyBackward", targets, v));
  const float* pp = probs.f32();
  const int32_t* tp = targets.i32();
  float* dp = dlogits.f32();
  const float s = scale / static_cast<float>(rows);
  const int threads = ThreadsFor(double(rows) * v, kElementsPerThread);
  ParallelFor(rows, threads, [=](int64_t r_begin, int64_t r_end) {
    for (int64_t r = r_begin; r < r_end; ++r) {
      const float* p = pp + r * v;
      float* d = dp + r * v;
#pragma omp simd
      for (int64_t j = 0; j < v; ++j) d[j] = p[j] * s;
      d[tp[r]] -= s;
    }
  });
  return OkStatus();
}

Status MseForward(const Tensor& pred, const Tensor& target, Tensor& loss) {
  const int64_t n = pred.numel();
  const float* a = pred.f32();
  const float* b = target.f32();
  const int64_t blocks = (n + kReduceBlock - 1) / kReduceBlock;
  const int threads = ThreadsFor(double(n), kElementsPerThread);
  const double total = ParallelSum(blocks, threads, [&](int64_t blk) {
    const int64_t end = std::min(n, (blk + 1) * kReduceBlock);
    double part = 0.0;
#pragma omp simd reduction(+ : part)
    for (int64_t i = blk * kReduceBlock; i < end; ++i) {
      const double d = double(a[i]) - double(b[i]);
      part += d * d;
    }
    return part;
  });
  loss.f32()[0] = static_cast<float>(total / static_cast<double>(n));
  return OkStatus();
}

Status MseBackward(const Tensor& pred, const Tensor& target, float scale, Tensor& dpred) {
  const int64_t n = pred.numel();
  const float* a = pred.f32();
  const float* b = target.f32();
  float* d = dpred.f32();
  const float s = 2.0f * scale / static_cast<float>(n);
  const int threads = ThreadsFor(double(n), kElementsPerThread);
  ParallelFor(n, threads, [=](int64_t i_begin, int64_t i_end) {
    for (int64_t i = i_begin; i < i_end; ++i) d[i] = (a[i] - b[i]) * s;
  });
  return OkStatus();
}

Status HingeForward(const Tensor& scores, const Tensor& targets, Tensor& loss) {
  const int64_t c = scores.dim(-1), rows = scores.numel() / c;
  GANTRY_RETURN_IF_ERROR(CheckTargets("HingeForward", targets, c));
  const float* xp = scores.f32();
  const int32_t* tp = targets.i32();
  double total = 0.0;
  for (int64_t r = 0; r < rows; ++r) {
    const float* x = xp + r * c;
    const float xt = x[tp[r]];
    float row = 0.0f;
    for (int64_t j = 0; j < c; ++j) {
      const float m = 1.0f - xt + x[j];
      if (j != tp[r] && m > 0.0f) row += m;
    }
    total += double(row) / double(c);
  }
  loss.f32()[0] = static_cast<float>(total / static_cast<double>(rows));
  return OkStatus();
}

Status HingeBackward(const Tensor& scores, const Tensor& targets, float scale, Tensor& dscores) {
  const int64_t c = scores.dim(-1), rows = scores.numel() / c;
  GANTRY_RETURN_IF_ERROR(CheckTargets("HingeBackward", targets, c));
  const float* xp = scores.f32();
  const int32_t* tp = targets.i32();
  float* dp = dscores.f32();
  const float g = scale / (static_cast<float>(rows) * static_cast<float>(c));
  for (int64_t r = 0; r < rows; ++r) {
    const float* x = xp + r * c;
    float* d = dp + r * c;
    const float xt = x[tp[r]];
    float active = 0.0f;
    for (int64_t j = 0; j < c; ++j) {
      const bool on = j != tp[r] && 1.0f - xt + x[j] > 0.0f;
      d[j] = on ? g : 0.0f;
      active += on ? 1.0f : 0.0f;
    }
    d[tp[r]] = -active * g;
  }
  return OkStatus();
}

}  // namespace gantry::kernels::cpu
