// CPU fused optimizer updates (one pass over param/grad/state, torch.optim's operation order,
// scalar factors computed in double and rounded to f32 as torch does) and L2 norm / clipping.
#include <algorithm>
#include <cmath>
#include <span>

#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/parallel.h"
#include "kernels/cpu/vec_math.h"

namespace gantry::kernels::cpu {

namespace {
constexpr double kElementsPerThread = 1 << 16;
constexpr int64_t kReduceBlock = 4096;  // elements per vectorised partial sum

// Squares summed in double (exact products) over 32 independent lanes: one vector accumulator
// made every block a chain of dependent adds (4 cycles each), ~3x slower than the loads.
constexpr int kSquareLanes = 32;

// Lane l holds the squares of elements begin + l, begin + l + 32, ...; the tail and then the
// lanes, in order, are added to the result. Every caller must use exactly this order, so the
// fused SGD pass below and L2Norm give the same bits.
inline double FinishSquares(const float* x, int64_t i, int64_t end, const double* lane) {
  double part = 0.0;
  for (; i < end; ++i) part += double(x[i]) * double(x[i]);
  for (int l = 0; l < kSquareLanes; ++l) part += lane[l];
  return part;
}

GANTRY_AVX512_CLONES double SumSquares(const float* x, int64_t begin, int64_t end) {
  double lane[kSquareLanes] = {};
  int64_t i = begin;
  for (; i + kSquareLanes <= end; i += kSquareLanes) {
    for (int l = 0; l < kSquareLanes; ++l) lane[l] += double(x[i + l]) * double(x[i + l]);
  }
  return FinishSquares(x, i, end, lane);
}

// The summed gradient of elements [begin, end) (at most kReduceBlock) of `terms`, added left
// to right, in this thread's block buffer (L1-resident; the update reads it right away).
GANTRY_AVX512_CLONES const float* SumTermsBlock(std::span<const float* const> terms,
                                                int64_t begin, int64_t end) {
  alignas(64) static thread_local float block[kReduceBlock];
  const int64_t len = end - begin;
  const float* t0 = terms[0] + begin;
  if (terms.size() == 1) return t0;
  const float* t1 = terms[1] + begin;
  for (int64_t j = 0; j < len; ++j) block[j] = t0[j] + t1[j];
  for (size_t t = 2; t < terms.size(); ++t) {
    const float* tt = terms[t] + begin;
    for (int64_t j = 0; j < len; ++j) block[j] += tt[j];
  }
  return block;
}

// The gradient of block [begin, end): g + begin, or the sum of `terms` (SumTermsBlock).
inline const float* GradBlock(const float* g, std::span<const float* const> terms,
                              int64_t begin, int64_t end) {
  return terms.empty() ? g + begin : SumTermsBlock(terms, begin, end);
}

// Runs body(begin, end, gb) over [0, n) on the pool, where gb[j] is the gradient of element
// begin + j: g + begin, or with `terms` their sum for that block (blocks of kReduceBlock).
// With `sq`, also adds sum(gradient^2) to it, each block squared right after its update
// (still in L1). With `copy`, each updated block of p is rounded to bf16 into it (also
// from L1).
template <typename Body>
void UpdateLoop(int64_t n, const float* p, const float* g, std::span<const float* const> terms,
                double* sq, uint16_t* copy, Body body) {
  const int threads = ThreadsFor(double(n), kElementsPerThread);
  if (sq == nullptr && terms.empty() && copy == nullptr) {
    ParallelFor(n, threads, [=](int64_t begin, int64_t end) { body(begin, end, g + begin); });
    return;
  }
  const int64_t blocks = (n + kReduceBlock - 1) / kReduceBlock;
  const double total = ParallelSum(blocks, threads, [=](int64_t blk) {
    const int64_t begin = blk * kReduceBlock, end = std::min(n, begin + kReduceBlock);
    const float* gb = GradBlock(g, terms, begin, end);
    body(begin, end, gb);
    if (copy != nullptr) FloatsToBf16(p + begin, end - begin, copy + begin);
    return sq != nullptr ? SumSquares(gb, 0, end - begin) : 0.0;
  });
  if (sq != nullptr) *sq += total;
}

struct SgdScalars {
  float lr, wd, mom;
  bool use_momentum, nesterov;
};

GANTRY_AVX512_CLONES void SgdRange(SgdScalars k, float* p, const float* g, float* buf,
                                   int64_t begin, int64_t end) {
  const float lr = k.lr, wd = k.wd, mom = k.mom;
  for (int64_t i = begin; i < end; ++i) {
    float d = g[i];
    if (wd != 0.0f) d = d + wd * p[i];
    if (k.use_momentum) {
      const float b = buf[i] * mom + d;
      buf[i] = b;
      d = k.nesterov ? d + mom * b : b;
    }
    p[i] = p[i] + (-lr) * d;
  }
}

// SGD with momentum, no weight decay, no Nesterov (the common case) and sum(g^2) in the same
// pass: the squares cost nothing while the loop waits for p and the momentum from memory
// (a separate SumSquares pass was ~2% of an mlp-mnist step). Same bits as SgdRange followed
// by SumSquares. grad(i) is the gradient of element i; the tail (under kSquareLanes
// elements) goes through a small copy so SgdRange and FinishSquares see the same values.
template <typename Grad>
[[gnu::always_inline]] inline double MomentumSquaresLoop(float lr, float mom, float* p, Grad grad,
                                                         float* buf, int64_t begin, int64_t end) {
  double lane[kSquareLanes] = {};
  int64_t i = begin;
  for (; i + kSquareLanes <= end; i += kSquareLanes) {
    for (int l = 0; l < kSquareLanes; ++l) {
      const float gi = grad(i + l);
      const float b = buf[i + l] * mom + gi;
      buf[i + l] = b;
      p[i + l] = p[i + l] + (-lr) * b;
      lane[l] += double(gi) * double(gi);
    }
  }
  float tail[kSquareLanes];
  const int64_t rest = end - i;
  for (int64_t j = 0; j < rest; ++j) tail[j] = grad(i + j);
  SgdRange({lr, 0.0f, mom, true, false}, p + i, tail, buf + i, 0, rest);
  return FinishSquares(tail, 0, rest, lane);
}

GANTRY_AVX512_CLONES double SgdMomentumSquares(float lr, float mom, float* p, const float* g,
                                               float* buf, int64_t begin, int64_t end) {
  return MomentumSquaresLoop(lr, mom, p, [g](int64_t i) { return g[i]; }, buf, begin, end);
}

// The same for the gradient g0 + g1 (added in that order, as SumTermsBlock does), summed as
// it is read instead of through a block buffer: two ranks' gradients under the data-parallel
// fused sum, the common case. Same bits as SumTermsBlock + SgdMomentumSquares.
GANTRY_AVX512_CLONES double SgdMomentumSquaresOfSum(float lr, float mom, float* p,
                                                    const float* g0, const float* g1, float* buf,
                                                    int64_t begin, int64_t end) {
  return MomentumSquaresLoop(
      lr, mom, p, [g0, g1](int64_t i) { return g0[i] + g1[i]; }, buf, begin, end);
}

struct AdamScalars {
  float b1, b2, one_minus_b1, one_minus_b2, neg_step_size, bc2_sqrt, eps, wd, decay_factor;
  bool decoupled;
};

GANTRY_AVX512_CLONES void AdamRange(AdamScalars k, float* p, const float* g, float* mp, float* vp,
                                    int64_t begin, int64_t end) {
  const float b1 = k.b1, b2 = k.b2, one_minus_b1 = k.one_minus_b1, one_minus_b2 = k.one_minus_b2;
  const float neg_step_size = k.neg_step_size, bc2_sqrt = k.bc2_sqrt, eps = k.eps, wd = k.wd;
  const float decay_factor = k.decay_factor;
  for (int64_t i = begin; i < end; ++i) {
    float pi = p[i];
    float gi = g[i];
    if (wd != 0.0f) {
      if (k.decoupled) {
        pi = pi * decay_factor;
      } else {
        gi = gi + wd * pi;
      }
    }
    const float mi = mp[i] * b1 + one_minus_b1 * gi;
    const float vi = vp[i] * b2 + one_minus_b2 * gi * gi;
    mp[i] = mi;
    vp[i] = vi;
    const float denom = std::sqrt(vi) / bc2_sqrt + eps;
    p[i] = pi + neg_step_size * mi / denom;
  }
}
}  // namespace

Status SgdUpdate(Tensor& param, const Tensor& grad, Tensor* momentum_buf, const SgdOptions& opts) {
  const int64_t n = param.numel();
  float* p = param.f32();
  const float* g = grad.f32();
  float* buf = momentum_buf != nullptr ? momentum_buf->f32() : nullptr;
  const float lr = opts.lr, wd = opts.weight_decay, mom = opts.momentum;
  const bool use_momentum = mom > 0.0f, nesterov = opts.nesterov;
  const SgdScalars k{lr, wd, mom, use_momentum, nesterov};
  // Ranges are passed relative to their first element (p + begin, gb, buf + begin).
  if (opts.grad_sq_sum != nullptr && use_momentum && !nesterov && wd == 0.0f) {
    const int64_t blocks = (n + kReduceBlock - 1) / kReduceBlock;
    const std::span<const float* const> terms = opts.grad_terms;
    uint16_t* copy = opts.bf16_copy;
    *opts.grad_sq_sum += ParallelSum(blocks, ThreadsFor(double(n), kElementsPerThread),
                                     [=](int64_t blk) {
      const int64_t begin = blk * kReduceBlock, end = std::min(n, begin + kReduceBlock);
      double sq;
      if (terms.size() == 2) {
        sq = SgdMomentumSquaresOfSum(lr, mom, p + begin, terms[0] + begin, terms[1] + begin,
                                     buf + begin, 0, end - begin);
      } else {
        const float* gb = GradBlock(g, terms, begin, end);
        sq = SgdMomentumSquares(lr, mom, p + begin, gb, buf + begin, 0, end - begin);
      }
      if (copy != nullptr) FloatsToBf16(p + begin, end - begin, copy + begin);
      return sq;
    });
    return OkStatus();
  }
  UpdateLoop(n, p, g, opts.grad_terms, opts.grad_sq_sum, opts.bf16_copy,
             [=](int64_t begin, int64_t end, const float* gb) {
    SgdRange(k, p + begin, gb, buf != nullptr ? buf + begin : nullptr, 0, end - begin);
  });
  return OkStatus();
}

Status AdamUpdate(Tensor& param, const Tensor& grad, Tensor& m, Tensor& v,
                  const AdamOptions& opts) {
  const int64_t n = param.numel();
  float* p = param.f32();
  const float* g = grad.f32();
  float* mp = m.f32();
  float* vp = v.f32();
  const double t = static_cast<double>(opts.step);
  const double lr = opts.lr, beta1 = opts.beta1, beta2 = opts.beta2;
  const float b1 = opts.beta1, b2 = opts.beta2;
  const float one_minus_b1 = static_cast<float>(1.0 - beta1);
  const float one_minus_b2 = static_cast<float>(1.0 - beta2);
  const float neg_step_size = static_cast<float>(-(lr / (1.0 - std::pow(beta1, t))));
  const float bc2_sqrt = static_cast<float>(std::sqrt(1.0 - std::pow(beta2, t)));
  const float eps = opts.eps;
  const float wd = opts.weight_decay;
  const bool decoupled = opts.decoupled_weight_decay;
  const float decay_factor = static_cast<float>(1.0 - lr * double(opts.weight_decay));
  const AdamScalars k{b1, b2, one_minus_b1, one_minus_b2, neg_step_size,
                      bc2_sqrt, eps, wd, decay_factor, decoupled};
  UpdateLoop(n, p, g, opts.grad_terms, opts.grad_sq_sum, opts.bf16_copy,
             [=](int64_t begin, int64_t end, const float* gb) {
    AdamRange(k, p + begin, gb, mp + begin, vp + begin, 0, end - begin);
  });
  return OkStatus();
}

StatusOr<float> L2Norm(const Tensor& t) {
  const int64_t n = t.numel();
  const float* x = t.f32();
  const int64_t blocks = (n + kReduceBlock - 1) / kReduceBlock;
  const int threads = ThreadsFor(double(n), kElementsPerThread);
  const double sum = ParallelSum(blocks, threads, [&](int64_t blk) {
    return SumSquares(x, blk * kReduceBlock, std::min(n, (blk + 1) * kReduceBlock));
  });
  return static_cast<float>(std::sqrt(sum));
}

StatusOr<float> ClipGradNorm(Tensor& grad, float max_norm) {
  GANTRY_ASSIGN_OR_RETURN(float norm, cpu::L2Norm(grad));
  if (norm > max_norm) {
    const float coef = max_norm / (norm + 1e-6f);
    GANTRY_RETURN_IF_ERROR(cpu::Scale(grad, coef));
  }
  return norm;
}

}  // namespace gantry::kernels::cpu
