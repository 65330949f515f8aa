// Matrix ops on CUDA: Matmul/Linear via cuBLAS (gemm.h), bias add and its column-sum backward,
// residual add, axpy and scale.
#include <cuda_runtime.h>

#include <string>

#include "kernels/cuda/check.h"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/context.h"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/gemm.h"

namespace gantry::kernels::cuda {

__global__ void ColumnFinishKernel(const float* partial, int64_t chunks, int64_t cols,
                                   float* out) {
  for (int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; c < cols;
       c += int64_t(gridDim.x) * blockDim.x) {
    float s = 0.0f;
    for (int64_t i = 0; i < chunks; ++i) s += partial[i * cols + c];
    out[c] += s;
  }
}

namespace {

// 2-D view of a tensor: leading dims folded into rows.
struct Mat {
  int64_t rows, cols;
};
Mat AsMatrix(const Tensor& t) {
  const int64_t cols = t.rank() == 0 ? 1 : t.dim(-1);
  return {cols == 0 ? 0 : t.numel() / cols, cols};
}

Status MatmulOn(const OpEnv& env, const Tensor& a, const Tensor& b, Tensor& c,
                const GemmOptions& opts) {
  GANTRY_RETURN_IF_ERROR(CheckOperand("Matmul", "a", a, env));
  GANTRY_RETURN_IF_ERROR(CheckOperand("Matmul", "b", b, env));
  GANTRY_RETURN_IF_ERROR(CheckOperand("Matmul", "c", c, env));
  const Mat ma = AsMatrix(a), mb = AsMatrix(b);
  RowMajorGemm g;
  g.trans_a = opts.trans_a;
  g.trans_b = opts.trans_b;
  g.m = opts.trans_a ? ma.cols : ma.rows;
  g.k = opts.trans_a ? ma.rows : ma.cols;
  const int64_t kb = opts.trans_b ? mb.cols : mb.rows;
  g.n = opts.trans_b ? mb.rows : mb.cols;
  if (kb != g.k || c.numel() != g.m * g.n) {
    return InvalidArgumentError("Matmul: a " + a.ToString() + (opts.trans_a ? "^T" : "") +
                                " times b " + b.ToString() + (opts.trans_b ? "^T" : "") +
                                " does not fit c " + c.ToString());
  }
  g.alpha = opts.alpha;
  g.beta = opts.beta;
  g.a = a.f32();
  g.lda = ma.cols;
  g.b = b.f32();
  g.ldb = mb.cols;
  g.c = c.f32();
  g.ldc = g.n;
  return GemmRowMajor(env.ctx, env.stream, g);
}

}  // namespace

Status Matmul(const Tensor& a, const Tensor& b, Tensor& c, const GemmOptions& opts) {
  GANTRY_ASSIGN_OR_RETURN(OpEnv env, BeginOp("Matmul", c));
  return MatmulOn(env, a, b, c, opts);
}

Status MatmulBackward(const Tensor& a, const Tensor& b, const Tensor& dc, Tensor* da,
                      Tensor* db) {
  GANTRY_ASSIGN_OR_RETURN(OpEnv env, BeginOp("MatmulBackward", dc));
  if (da != nullptr) {  // da = dc * b^T
    GANTRY_RETURN_IF_ERROR(MatmulOn(env, dc, b, *da, GemmOptions{false, true, 1.0f, 0.0f}));
  }
  if (db != nullptr) {  // db += a^T * dc
    GANTRY_RETURN_IF_ERROR(MatmulOn(env, a, dc, *db, GemmOptions{true, false, 1.0f, 1.0f}));
  }
  return OkStatus();
}

Status LinearForward(const Tensor& x, const Tensor& w, const Tensor* b, Tensor& y) {
  GANTRY_ASSIGN_OR_RETURN(OpEnv env, BeginOp("LinearForward", y));
  GANTRY_RETURN_IF_ERROR(MatmulOn(env, x, w, y, GemmOptions{false, true, 1.0f, 0.0f}));
  if (b != nullptr) GANTRY_RETURN_IF_ERROR(cuda::BiasAddForward(y, *b));
  return OkStatus();
}

Status LinearBackward(const Tensor& x, const Tensor& w, const Tensor& dy, Tensor* dx, Tensor& dw,
                      Tensor* db) {
  GANTRY_ASSIGN_OR_RETURN(OpEnv env, BeginOp("LinearBackward", dy));
  if (dx != nullptr) {  // dx [R, in] = dy [R, out] * w [out, in]
    GANTRY_RETURN_IF_ERROR(MatmulOn(env, dy, w, *dx, GemmOptions{false, false, 1.0f, 0.0f}));
  }
  // dw [out, in] += dy^T [out, R] * x [R, in]
  GANTRY_RETURN_IF_ERROR(MatmulOn(env, dy, x, dw, GemmOptions{true, false, 1.0f, 1.0f}));
  if (db != nullptr) GANTRY_RETURN_IF_ERROR(cuda::BiasAddBackward(dy, *db));
  return OkStatus();
}

Status BiasAddForward(Tensor& y, const Tensor& b) {
  GANTRY_ASSIGN_OR_RETURN(OpEnv env, BeginOp("BiasAddForward", y));
  GANTRY_RETURN_IF_ERROR(CheckOperand("BiasAddForward", "y", y, env));
  GANTRY_RETURN_IF_ERROR(CheckOperand("BiasAddForward", "b", b, env));
  const int64_t n = b.numel();
  if (n == 0 || y.numel() % n != 0) {
    return InvalidArgumentError("BiasAddForward: b " + b.ToString() + " does not divide y " +
                                y.ToString());
  }
  float* py = y.f32();
  const float* pb = b.f32();
  return LaunchElementwise(y.numel(), env.stream,
                           [=] __device__(int64_t i) { py[i] += pb[i % n]; });
}

Status BiasAddBackward(const Tensor& dy, Tensor& db) {
  GANTRY_ASSIGN_OR_RETURN(OpEnv env, BeginOp("BiasAddBackward", dy));
  GANTRY_RETURN_IF_ERROR(CheckOperand("BiasAddBackward", "dy", dy, env));
  GANTRY_RETURN_IF_ERROR(CheckOperand("BiasAddBackward", "db", db, env));
  const int64_t n = db.numel();
  if (n == 0 || dy.numel() % n != 0) {
    return InvalidArgumentError("BiasAddBackward: db " + db.ToString() + " does not divide dy " +
                                dy.ToString());
  }
  const float* pdy = dy.f32();
  return ColumnSumAccumulate(env, dy.numel() / n, n, db.f32(),
                             [=] __device__(int64_t r, int64_t c) { return pdy[r * n + c]; });
}

Status Add(const Tensor& a, const Tensor& b, Tensor& y) {
  GANTRY_ASSIGN_OR_RETURN(OpEnv env, BeginOp("Add", y));
  GANTRY_RETURN_IF_ERROR(CheckOperand("Add", "a", a, env));
  GANTRY_RETURN_IF_ERROR(CheckOperand("Add", "b", b, env));
  GANTRY_RETURN_IF_ERROR(CheckOperand("Add", "y", y, env));
  if (a.numel() != y.numel() || b.numel() != y.numel()) {
    return InvalidArgumentError("Add: " + a.ToString() + " + " + b.ToString() + " -> " +
                                y.ToString() + " needs equal element counts");
  }
  const float* pa = a.f32();
  const float* pb = b.f32();
  float* py = y.f32();
  return LaunchElementwise(y.numel(), env.stream,
                           [=] __device__(int64_t i) { py[i] = pa[i] + pb[i]; });
}

Status AddInPlace(Tensor& y, const Tensor& x, float alpha) {
  GANTRY_ASSIGN_OR_RETURN(OpEnv env, BeginOp("AddInPlace", y));
  GANTRY_RETURN_IF_ERROR(CheckOperand("AddInPlace", "y", y, env));
  GANTRY_RETURN_IF_ERROR(CheckOperand("AddInPlace", "x", x, env));
  if (x.numel() != y.numel()) {
    return InvalidArgumentError("AddInPlace: " + x.ToString() + " into " + y.ToString() +
                                " needs equal element counts");
  }
  const float* px = x.f32();
  float* py = y.f32();
  return LaunchElementwise(y.numel(), env.stream,
                           [=] __device__(int64_t i) { py[i] += alpha * px[i]; });
}

Status Scale(Tensor& t, float s) {
  GANTRY_ASSIGN_OR_RETURN(OpEnv env, BeginOp("Scale", t));
  GANTRY_RETURN_IF_ERROR(CheckOperand("Scale", "t", t, env));
  float* p = t.f32();
  return LaunchElementwise(t.numel(), env.stream, [=] __device__(int64_t i) { p[i] *= s; });
}

}  // namespace gantry::kernels::cuda
