// Matrix ops: GEMM, Linear (PyTorch layout), bias add, residual add.
// Conventions for every op header in kernels/: outputs are preallocated by the caller with the
// documented shapes (no allocation inside an op); forward overwrites its outputs; backward
// OVERWRITES input gradients (dx) and ACCUMULATES (+=) parameter gradients (dw, db), so a
// flat gradient buffer is zeroed once per step. All tensors of one call share a device.
// Compute dtype is f32. Errors: kInvalidArgument naming the op and the offending tensor.
#pragma once

#include "kernels/tensor.h"

namespace gantry::kernels {

struct GemmOptions {
  bool trans_a = false;
  bool trans_b = false;
  float alpha = 1.0f;
  float beta = 0.0f;  // 1.0 accumulates into c
};

// c[M,N] = alpha * op(a) * op(b) + beta * c. Tensors of rank > 2 fold their leading dims into
// rows (a [.., K] with M = numel/K). CPU: oneDNN sgemm; CUDA: cuBLAS.
Status Matmul(const Tensor& a, const Tensor& b, Tensor& c, const GemmOptions& opts = {});
// For c = a * b (no transposes): da = dc * bT (overwrite), db += aT * dc. Either may be null.
Status MatmulBackward(const Tensor& a, const Tensor& b, const Tensor& dc, Tensor* da, Tensor* db);

// y[.., out] = x[.., in] * wT + b, w is [out, in]; b [out] may be null.
Status LinearForward(const Tensor& x, const Tensor& w, const Tensor* b, Tensor& y);
// dx = dy * w (overwrite; skipped when null), dw += dyT * x, db += sum over rows of dy.
Status LinearBackward(const Tensor& x, const Tensor& w, const Tensor& dy, Tensor* dx, Tensor& dw,
                      Tensor* db);

// y[.., n] += b[n]
Status BiasAddForward(Tensor& y, const Tensor& b);
// db[n] += sum over rows of dy[.., n]
Status BiasAddBackward(const Tensor& dy, Tensor& db);

// Residual add: y = a + b (y may alias a or b). Its backward is the identity on both inputs,
// done with AddInPlace where the gradient streams merge.
Status Add(const Tensor& a, const Tensor& b, Tensor& y);
// y += alpha * x
Status AddInPlace(Tensor& y, const Tensor& x, float alpha = 1.0f);
// t *= s
Status Scale(Tensor& t, float s);

}  // namespace gantry::kernels
