// Softmax and LayerNorm over the last dim on CUDA: one warp per row (llm.c style), lanes stride
// the row; LayerNorm's parameter gradients are deterministic column sums (common.cuh).
#include <cuda_runtime.h>

#include <string>

#include "kernels/cuda/check.h"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/context.h"
#include "kernels/cuda/cuda_ops.h"

namespace gantry::kernels::cuda {
namespace {

constexpr int kWarpsPerBlock = 8;

unsigned WarpRowGrid(int64_t rows) {
  return static_cast<unsigned>((rows + kWarpsPerBlock - 1) / kWarpsPerBlock);
}
__device__ __forceinline__ int64_t WarpRow() {
  return int64_t(blockIdx.x) * kWarpsPerBlock + threadIdx.x / 32;
}

// Online max/sum-of-exp merged across lanes; returns (max, sum exp(x - max)) of the row.
// A -inf entry adds exp(-inf) = 0 and is skipped: while m is still -inf, exp(v - m) would be
// exp(-inf + inf) = NaN. (A row of only -inf gives m = -inf, s = 0 and NaN outputs, as the CPU.)
__device__ __forceinline__ void RowMaxSum(const float* row, int64_t cols, float& m, float& s) {
  const int lane = threadIdx.x % 32;
  m = -INFINITY;
  s = 0.0f;
  for (int64_t c = lane; c < cols; c += 32) {
    const float v = row[c];
    if (v == -INFINITY) continue;
    if (v > m) {
      s = s * expf(m - v) + 1.0f;
      m = v;
    } else {
      s += expf(v - m);
    }
  }
  for (int o = 16; o > 0; o >>= 1) {
    const float mo = __shfl_xor_sync(kFullMask, m, o);
    const float so = __shfl_xor_sync(kFullMask, s, o);
    const float mn = fmaxf(m, mo);
    if (mn == -INFINITY) continue;
    s = s * expf(m - mn) + so * expf(mo - mn);
    m = mn;
  }
}

__global__ void SoftmaxForwardKernel(const float* x, float* y, int64_t rows, int64_t cols) {
  const int64_t r = WarpRow();
  if (r >= rows) return;
  const float* xr = x + r * cols;
  float* yr = y + r * cols;
  float m, s;
  RowMaxSum(xr, cols, m, s);
  const float inv = 1.0f / s;
  for (int64_t c = threadIdx.x % 32; c < cols; c += 32) yr[c] = expf(xr[c] - m) * inv;
}

__global__ void SoftmaxBackwardKernel(const float* y, const float* dy, float* dx, int64_t rows,
                                      int64_t cols) {
  const int64_t r = WarpRow();
  if (r >= rows) return;
  const float* yr = y + r * cols;
  const float* dyr = dy + r * cols;
  float dot = 0.0f;
  for (int64_t c = threadIdx.x % 32; c < cols; c += 32) dot += yr[c] * dyr[c];
  dot = WarpSum(dot);
  for (int64_t c = threadIdx.x % 32; c < cols; c += 32) {
    dx[r * cols + c] = yr[c] * (dyr[c] - dot);
  }
}

__global__ void LayerNormForwardKernel(const float* x, const float* gamma, const float* beta,
                                       float eps, float* y, float* mean, float* rstd,
                                       int64_t rows, int64_t cols) {
  const int64_t r = WarpRow();
  if (r >= rows) return;
  const int lane = threadIdx.x % 32;
  const float* xr = x + r * cols;
  float sum = 0.0f;
  for (int64_t c = lane; c < cols; c += 32) sum += xr[c];
  const float mu = WarpSum(sum) / cols;
  float var = 0.0f;
  for (int64_t c = lane; c < cols; c += 32) {
    const float d = xr[c] - mu;
    var += d * d;
  }
  const float rs = rsqrtf(WarpSum(var) / cols + eps);
  for (int64_t c = lane; c < cols; c += 32) {
    y[r * cols + c] = (xr[c] - mu) * rs * gamma[c] + beta[c];
  }
  if (lane == 0) {
    mean[r] = mu;
    rstd[r] = rs;
  }
}

__global__ void LayerNormBackwardKernel(const float* x, const float* gamma, const float* mean,
                                        const float* rstd, const float* dy, float* dx,
                                        int64_t rows, int64_t cols) {
  const int64_t r = WarpRow();
  if (r >= rows) return;
  const int lane = threadIdx.x % 32;
  const float* xr = x + r * cols;
  const float* dyr = dy + r * cols;
  const float mu = mean[r], rs = rstd[r];
  float sum_g = 0.0f, sum_gx = 0.0f;  // sums of dxhat and dxhat * xhat
  for (int64_t c = lane; c < cols; c += 32) {
    const float g = dyr[c] * gamma[c];
    sum_g += g;
    sum_gx += g * (xr[c] - mu) * rs;
  }
  const float mean_g = WarpSum(sum_g) / cols;
  const float mean_gx = WarpSum(sum_gx) / cols;
  for (int64_t c = lane; c < cols; c += 32) {
    const float xhat = (xr[c] - mu) * rs;
    dx[r * cols + c] = (dyr[c] * gamma[c] - mean_g - xhat * mean_gx) * rs;
  }
}

Status CheckRows(const char* op, const OpEnv& env, int64_t rows, int64_t cols,
                 std::initializer_list<std::pair<const char*, const Tensor*>> ts) {
  for (const auto& [name, t] : ts) {
    GANTRY_RETURN_IF_ERROR(CheckOperand(op, name, *t, env));
    if (t->numel() != rows * cols) {
      return InvalidArgumentError(std::string(op) + ": " + name + " " + t->ToString() +
                                  " must hold " + std::to_string(rows) + " x " +
                                  std::to_string(cols) + " elements");
    }
  }
  return OkStatus();
}

}  // namespace

Status SoftmaxForward(const Tensor& x, Tensor& y) {
  constexpr const char* kOp = "SoftmaxForward";
  GANTRY_ASSIGN_OR_RETURN(OpEnv env, BeginOp(kOp, x));
  const int64_t rows = RowsOf(x), cols = x.rank() ? x.dim(-1) : 1;
  GANTRY_RETURN_IF_ERROR(CheckRows(kOp, env, rows, cols, {{"x", &x}, {"y", &y}}));
  if (rows == 0) return OkStatus();
  SoftmaxForwardKernel<<<WarpRowGrid(rows), kWarpsPerBlock * 32, 0, env.stream>>>(
      x.f32(), y.f32(), rows, cols);
  GANTRY_CUDA_CHECK_LAUNCH(kOp);
  return OkStatus();
}

Status SoftmaxBackward(const Tensor& y, const Tensor& dy, Tensor& dx) {
  constexpr const char* kOp = "SoftmaxBackward";
  GANTRY_ASSIGN_OR_RETURN(OpEnv env, BeginOp(kOp, y));
  const int64_t rows = RowsOf(y), cols = y.rank() ? y.dim(-1) : 1;
  GANTRY_RETURN_IF_ERROR(CheckRows(kOp, env, rows, cols, {{"y", &y}, {"dy", &dy}, {"dx", &dx}}));
  if (rows == 0) return OkStatus();
  SoftmaxBackwardKernel<<<WarpRowGrid(rows), kWarpsPerBlock * 32, 0, env.stream>>>(
      y.f32(), dy.f32(), dx.f32(), rows, cols);
  GANTRY_CUDA_CHECK_LAUNCH(kOp);
  return OkStatus();
}

Status LayerNormForward(const Tensor& x, const Tensor& gamma, const Tensor& beta, float eps,
                        Tensor& y, Tensor& mean, Tensor& rstd) {
  constexpr const char* kOp = "LayerNormForward";
  GANTRY_ASSIGN_OR_RETURN(OpEnv env, BeginOp(kOp, x));
  const int64_t rows = RowsOf(x), cols = x.rank() ? x.dim(-1) : 1;
  GANTRY_RETURN_IF_ERROR(CheckRows(kOp, env, rows, cols, {{"x", &x}, {"y", &y}}));
  GANTRY_RETURN_IF_ERROR(CheckRows(kOp, env, 1, cols, {{"gamma", &gamma}, {"beta", &beta}}));
  GANTRY_RETURN_IF_ERROR(CheckRows(kOp, env, rows, 1, {{"mean", &mean}, {"rstd", &rstd}}));
  if (rows == 0) return OkStatus();
  LayerNormForwardKernel<<<WarpRowGrid(rows), kWarpsPerBlock * 32, 0, env.stream>>>(
      x.f32(), gamma.f32(), beta.f32(), eps, y.f32(), mean.f32(), rstd.f32(), rows, cols);
  GANTRY_CUDA_CHECK_LAUNCH(kOp);
  return OkStatus();
}

Status LayerNormBackward(const Tensor& x, const Tensor& gamma, const Tensor& mean,
                         const Tensor& rstd, const Tensor& dy, Tensor& dx, Tensor& dgamma,
                         Tensor& dbeta) {
  constexpr const char* kOp = "LayerNormBackward";
  GANTRY_ASSIGN_OR_RETURN(OpEnv env, BeginOp(kOp, x));
  const int64_t rows = RowsOf(x), cols = x.rank() ? x.dim(-1) : 1;
  GANTRY_RETURN_IF_ERROR(CheckRows(kOp, env, rows, cols, {{"x", &x}, {"dy", &dy}, {"dx", &dx}}));
  GANTRY_RETURN_IF_ERROR(CheckRows(kOp, env, 1, cols,
                                   {{"gamma", &gamma}, {"dgamma", &dgamma}, {"dbeta", &dbeta}}));
  GANTRY_RETURN_IF_ERROR(CheckRows(kOp, env, rows, 1, {{"mean", &mean}, {"rstd", &rstd}}));
  if (rows == 0) return OkStatus();
  const float* px = x.f32();
  const float* pdy = dy.f32();
  const float* pmean = mean.f32();
  const float* prstd = rstd.f32();
  // Parameter gradients first: dx may alias dy.
  GANTRY_RETURN_IF_ERROR(ColumnSumAccumulate(env, rows, cols, dgamma.f32(),
                                             [=] __device__(int64_t r, int64_t c) {
                                               return pdy[r * cols + c] *
                                                      (px[r * cols + c] - pmean[r]) * prstd[r];
                                             }));
  GANTRY_RETURN_IF_ERROR(ColumnSumAccumulate(
      env, rows, cols, dbeta.f32(),
      [=] __device__(int64_t r, int64_t c) { return pdy[r * cols + c]; }));
  LayerNormBackwardKernel<<<WarpRowGrid(rows), kWarpsPerBlock * 32, 0, env.stream>>>(
      px, gamma.f32(), pmean, prstd, pdy, dx.f32(), rows, cols);
  GANTRY_CUDA_CHECK_LAUNCH(kOp);
  return OkStatus();
}

}  // namespace gantry::kernels::cuda
