// 2-D convolution and pooling, NCHW (PyTorch layout). CPU: im2col + oneDNN GEMM; CUDA: cuDNN.
// See kernels/linear.h for conventions.
#pragma once

#include "kernels/tensor.h"

namespace gantry::kernels {

struct Conv2dOptions {
  int stride = 1;
  int padding = 0;
};
// x [N, Cin, H, W], w [Cout, Cin, KH, KW] -> y [N, Cout, OH, OW].
Shape Conv2dOutputShape(const Shape& x, const Shape& w, const Conv2dOptions& opts);
// f32 elements of scratch the op needs on `device` (im2col columns or cuDNN workspace).
int64_t Conv2dWorkspaceElements(const Shape& x, const Shape& w, const Conv2dOptions& opts,
                                Device device);
// b [Cout] may be null. workspace: f32 with >= Conv2dWorkspaceElements elements.
Status Conv2dForward(const Tensor& x, const Tensor& w, const Tensor* b, const Conv2dOptions& opts,
                     Tensor& y, Tensor& workspace);
// dx overwritten (skipped when null); dw, db accumulated (db skipped when null).
Status Conv2dBackward(const Tensor& x, const Tensor& w, const Tensor& dy,
                      const Conv2dOptions& opts, Tensor* dx, Tensor& dw, Tensor* db,
                      Tensor& workspace);

enum class PoolKind { kMax, kAvg };
struct Pool2dOptions {
  PoolKind kind = PoolKind::kMax;
  int kernel = 2;
  int stride = 2;
  int padding = 0;  // avg pool counts padded zeros (torch count_include_pad=True)
};
Shape Pool2dOutputShape(const Shape& x, const Pool2dOptions& opts);
// x [N, C, H, W] -> y [N, C, OH, OW]; max pool writes the flat argmax (h * W + w, i32, same
// shape as y) to `indices` (required for kMax, ignored for kAvg).
Status Pool2dForward(const Tensor& x, const Pool2dOptions& opts, Tensor& y, Tensor* indices);
// dx overwritten.
Status Pool2dBackward(const Tensor& dy, const Tensor* indices, const Pool2dOptions& opts,
                      Tensor& dx);

}  // namespace gantry::kernels
