// Max / average 2-D pooling on CUDA (NCHW). Custom kernels rather than cuDNN: the op table
// returns max-pool argmax indices (cuDNN keeps none) and its backward takes only dy + indices.
// Backward gathers from the input side (each dx element sums the windows covering it), so it
// is deterministic and needs no zero-fill or atomics.
#include <cuda_runtime.h>

#include <string>

#include "kernels/cuda/check.h"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/context.h"
#include "kernels/cuda/cuda_ops.h"

namespace gantry::kernels::cuda {
namespace {

struct PoolDims {
  int64_t n, c, h, w, oh, ow;
  int k, s, p;
};

StatusOr<PoolDims> Dims(const char* op, const OpEnv& env, const Tensor& in, const Tensor& out,
                        const Pool2dOptions& opts) {
  GANTRY_RETURN_IF_ERROR(CheckOperand(op, "input", in, env));
  GANTRY_RETURN_IF_ERROR(CheckOperand(op, "output", out, env));
  if (in.rank() != 4 || out.rank() != 4 || opts.kernel <= 0 || opts.stride <= 0 ||
      opts.padding < 0 || in.dim(0) != out.dim(0) || in.dim(1) != out.dim(1)) {
    return InvalidArgumentError(std::string(op) + ": input " + in.ToString() + " and output " +
                                out.ToString() + " must be NCHW with the same N and C, kernel " +
                                std::to_string(opts.kernel) + " stride " +
                                std::to_string(opts.stride) + " > 0");
  }
  return PoolDims{in.dim(0), in.dim(1), in.dim(2), in.dim(3), out.dim(2), out.dim(3),
                  opts.kernel, opts.stride, opts.padding};
}

}  // namespace

Status Pool2dForward(const Tensor& x, const Pool2dOptions& opts, Tensor& y, Tensor* indices) {
  constexpr const char* kOp = "Pool2dForward";
  GANTRY_ASSIGN_OR_RETURN(OpEnv env, BeginOp(kOp, x));
  GANTRY_ASSIGN_OR_RETURN(PoolDims d, Dims(kOp, env, x, y, opts));
  const float* px = x.f32();
  float* py = y.f32();
  if (opts.kind == PoolKind::kAvg) {
    const float inv = 1.0f / static_cast<float>(d.k * d.k);  // padded zeros count
    return LaunchElementwise(y.numel(), env.stream, [=] __device__(int64_t i) {
      const int64_t ow = i % d.ow, oh = (i / d.ow) % d.oh, plane = i / (d.ow * d.oh);
      const float* xp = px + plane * d.h * d.w;
      float s = 0.0f;
      for (int kh = 0; kh < d.k; ++kh) {
        const int64_t h = oh * d.s - d.p + kh;
        if (h < 0 || h >= d.h) continue;
        for (int kw = 0; kw < d.k; ++kw) {
          const int64_t w = ow * d.s - d.p + kw;
          if (w >= 0 && w < d.w) s += xp[h * d.w + w];
        }
      }
      py[i] = s * inv;
    });
  }
  if (indices == nullptr) return InvalidArgumentError("Pool2dForward: max pool needs indices");
  GANTRY_RETURN_IF_ERROR(CheckOperand(kOp, "indices", *indices, env, DType::kI32));
  if (indices->numel() != y.numel()) {
    return InvalidArgumentError("Pool2dForward: indices " + indices->ToString() +
                                " must match y " + y.ToString());
  }
  int32_t* pi = indices->i32();
  return LaunchElementwise(y.numel(), env.stream, [=] __device__(int64_t i) {
    const int64_t ow = i % d.ow, oh = (i / d.ow) % d.oh, plane = i / (d.ow * d.oh);
    const float* xp = px + plane * d.h * d.w;
    float best = -INFINITY;
    int64_t arg = -1;
    for (int kh = 0; kh < d.k; ++kh) {
      const int64_t h = oh * d.s - d.p + kh;
      if (h < 0 || h >= d.h) continue;
      for (int kw = 0; kw < d.k; ++kw) {
        const int64_t w = ow * d.s - d.p + kw;
        if (w < 0 || w >= d.w) continue;
        const float v = xp[h * d.w + w];
        // First maximum wins; NaN propagates (torch), the last NaN of the window giving the
        // index, as on the CPU (the whole window is scanned).
        if (arg < 0 || v > best || isnan(v)) {
          best = v;
          arg = h * d.w + w;
        }
      }
    }
    py[i] = best;
    pi[i] = static_cast<int32_t>(arg);
  });
}

Status Pool2dBackward(const Tensor& dy, const Tensor* indices, const Pool2dOptions& opts,
                      Tensor& dx) {
  constexpr const char* kOp = "Pool2dBackward";
  GANTRY_ASSIGN_OR_RETURN(OpEnv env, BeginOp(kOp, dy));
  GANTRY_ASSIGN_OR_RETURN(PoolDims d, Dims(kOp, env, dx, dy, opts));
  const float* pdy = dy.f32();
  float* pdx = dx.f32();
  const bool is_max = opts.kind == PoolKind::kMax;
  const int32_t* pi = nullptr;
  if (is_max) {
    if (indices == nullptr) return InvalidArgumentError("Pool2dBackward: max pool needs indices");
    GANTRY_RETURN_IF_ERROR(CheckOperand(kOp, "indices", *indices, env, DType::kI32));
    if (indices->numel() != dy.numel()) {
      return InvalidArgumentError("Pool2dBackward: indices " + indices->ToString() +
                                  " must match dy " + dy.ToString());
    }
    pi = indices->i32();
  }
  const float inv = 1.0f / static_cast<float>(d.k * d.k);
  return LaunchElementwise(dx.numel(), env.stream, [=] __device__(int64_t i) {
    const int64_t w = i % d.w, h = (i / d.w) % d.h, plane = i / (d.w * d.h);
    // Output windows covering (h, w): oh*s - p <= h <= oh*s - p + k - 1.
    int64_t oh0 = h + d.p - d.k + 1, ow0 = w + d.p - d.k + 1;
    oh0 = oh0 <= 0 ? 0 : (oh0 + d.s - 1) / d.s;
    ow0 = ow0 <= 0 ? 0 : (ow0 + d.s - 1) / d.s;
    int64_t oh1 = (h + d.p) / d.s, ow1 = (w + d.p) / d.s;
    if (oh1 > d.oh - 1) oh1 = d.oh - 1;
    if (ow1 > d.ow - 1) ow1 = d.ow - 1;
    const int64_t self = h * d.w + w;
    float s = 0.0f;
    for (int64_t oh = oh0; oh <= oh1; ++oh) {
      for (int64_t ow = ow0; ow <= ow1; ++ow) {
        const int64_t o = (plane * d.oh + oh) * d.ow + ow;
        if (!is_max) {
          s += pdy[o] * inv;
        } else if (pi[o] == self) {
          s += pdy[o];
        }
      }
    }
    pdx[i] = s;
  });
}

}  // namespace gantry::kernels::cuda
