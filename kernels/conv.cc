// Public conv2d / pool2d: output shapes, shared checks, then dispatch.
#include "kernels/conv.h"

#include "kernels/dispatch.h"

namespace gantry::kernels {

namespace {

Status CheckConvArgs(const char* op, const Tensor& x, const Tensor& w, const Conv2dOptions& o) {
  GANTRY_RETURN_IF_ERROR(internal::CheckRank(op, "x", x, 4));
  GANTRY_RETURN_IF_ERROR(internal::CheckRank(op, "w", w, 4));
  if (w.dim(1) != x.dim(1)) {
    return InvalidArgumentError(std::string(op) + ": w " + ShapeToString(w.shape()) + " has " +
                                std::to_string(w.dim(1)) + " input channels but x " +
                                ShapeToString(x.shape()) + " has " + std::to_string(x.dim(1)));
  }
  if (x.dim(0) == 0 || x.dim(1) == 0 || w.dim(0) == 0) {  // cuDNN refuses empty descriptors
    return InvalidArgumentError(std::string(op) + ": x " + ShapeToString(x.shape()) + " / w " +
                                ShapeToString(w.shape()) +
                                " is empty (batch, input or output channels are 0)");
  }
  Shape y = Conv2dOutputShape(x.shape(), w.shape(), o);
  if (o.stride < 1 || o.padding < 0 || y.empty() || y[2] <= 0 || y[3] <= 0) {
    return InvalidArgumentError(std::string(op) + ": kernel " + ShapeToString(w.shape()) +
                                " with stride " + std::to_string(o.stride) + " and padding " +
                                std::to_string(o.padding) + " does not fit input " +
                                ShapeToString(x.shape()));
  }
  return OkStatus();
}

Status CheckWorkspace(const char* op, const Tensor& x, const Tensor& w, const Conv2dOptions& o,
                      const Tensor& ws) {
  const int64_t need = Conv2dWorkspaceElements(x.shape(), w.shape(), o, x.device());
  if (ws.numel() < need) {
    return InvalidArgumentError(std::string(op) + ": workspace " + ws.ToString() + " has " +
                                std::to_string(ws.numel()) + " elements but " +
                                std::to_string(need) +
                                " are required (allocate Conv2dWorkspaceElements)");
  }
  return OkStatus();
}

Status CheckPoolArgs(const char* op, const Shape& x, const Pool2dOptions& o) {
  if (x.size() != 4 || o.kernel < 1 || o.stride < 1 || o.padding < 0 ||
      o.padding * 2 > o.kernel) {
    return InvalidArgumentError(std::string(op) + ": input " + ShapeToString(x) + " kernel " +
                                std::to_string(o.kernel) + " stride " +
                                std::to_string(o.stride) + " padding " +
                                std::to_string(o.padding) +
                                ": need rank 4, kernel >= 1, stride >= 1, 0 <= padding <= kernel/2");
  }
  Shape y = Pool2dOutputShape(x, o);
  if (y[2] <= 0 || y[3] <= 0) {
    return InvalidArgumentError(std::string(op) + ": pool window " + std::to_string(o.kernel) +
                                " does not fit input " + ShapeToString(x));
  }
  return OkStatus();
}

// Output extent of a window sweep; 0 when the window does not fit (no negative truncation).
int64_t OutExtent(int64_t in, int64_t pad, int64_t window, int64_t stride) {
  const int64_t span = in + 2 * pad - window;
  return span < 0 ? 0 : span / stride + 1;
}

}  // namespace

Shape Conv2dOutputShape(const Shape& x, const Shape& w, const Conv2dOptions& opts) {
  if (x.size() != 4 || w.size() != 4 || opts.stride < 1) return {};
  return {x[0], w[0], OutExtent(x[2], opts.padding, w[2], opts.stride),
          OutExtent(x[3], opts.padding, w[3], opts.stride)};
}

int64_t Conv2dWorkspaceElements(const Shape& x, const Shape& w, const Conv2dOptions& opts,
                                Device device) {
  if (Conv2dOutputShape(x, w, opts).empty()) return 0;
  if (device.is_cuda()) {
#if GANTRY_KERNELS_WITH_CUDA
    return cuda::Conv2dWorkspaceElements(x, w, opts, device);
#else
    return 0;
#endif
  }
  return cpu::Conv2dWorkspaceElements(x, w, opts);
}

Status Conv2dForward(const Tensor& x, const Tensor& w, const Tensor* b, const Conv2dOptions& opts,
                     Tensor& y, Tensor& workspace) {
  constexpr const char* kOp = "Conv2dForward";
  GANTRY_RETURN_IF_ERROR(internal::CheckDTypes(
      kOp, DType::kF32, {{"x", &x}, {"w", &w}, {"b", b}, {"y", &y}, {"workspace", &workspace}}));
  GANTRY_RETURN_IF_ERROR(CheckSameDevice(kOp, {&x, &w, b, &y, &workspace}));
  GANTRY_RETURN_IF_ERROR(CheckConvArgs(kOp, x, w, opts));
  GANTRY_RETURN_IF_ERROR(CheckShape(kOp, "y", y, Conv2dOutputShape(x.shape(), w.shape(), opts)));
  if (b != nullptr) GANTRY_RETURN_IF_ERROR(CheckShape(kOp, "b", *b, {w.dim(0)}));
  GANTRY_RETURN_IF_ERROR(CheckWorkspace(kOp, x, w, opts, workspace));
  GANTRY_KERNELS_DISPATCH(kOp, x.device(), Conv2dForward(x, w, b, opts, y, workspace));
}

Status Conv2dBackward(const Tensor& x, const Tensor& w, const Tensor& dy,
                      const Conv2dOptions& opts, Tensor* dx, Tensor& dw, Tensor* db,
                      Tensor& workspace) {
  constexpr const char* kOp = "Conv2dBackward";
  GANTRY_RETURN_IF_ERROR(internal::CheckDTypes(kOp, DType::kF32,
                                               {{"x", &x}, {"w", &w}, {"dy", &dy}, {"dx", dx},
                                                {"dw", &dw}, {"db", db},
                                                {"workspace", &workspace}}));
  GANTRY_RETURN_IF_ERROR(CheckSameDevice(kOp, {&x, &w, &dy, dx, &dw, db, &workspace}));
  GANTRY_RETURN_IF_ERROR(CheckConvArgs(kOp, x, w, opts));
  GANTRY_RETURN_IF_ERROR(CheckShape(kOp, "dy", dy, Conv2dOutputShape(x.shape(), w.shape(), opts)));
  if (dx != nullptr) GANTRY_RETURN_IF_ERROR(CheckShape(kOp, "dx", *dx, x.shape()));
  GANTRY_RETURN_IF_ERROR(CheckShape(kOp, "dw", dw, w.shape()));
  if (db != nullptr) GANTRY_RETURN_IF_ERROR(CheckShape(kOp, "db", *db, {w.dim(0)}));
  GANTRY_RETURN_IF_ERROR(CheckWorkspace(kOp, x, w, opts, workspace));
  GANTRY_KERNELS_DISPATCH(kOp, x.device(), Conv2dBackward(x, w, dy, opts, dx, dw, db, workspace));
}

Shape Pool2dOutputShape(const Shape& x, const Pool2dOptions& opts) {
  if (x.size() != 4 || opts.stride < 1) return {};
  return {x[0], x[1], OutExtent(x[2], opts.padding, opts.kernel, opts.stride),
          OutExtent(x[3], opts.padding, opts.kernel, opts.stride)};
}

Status Pool2dForward(const Tensor& x, const Pool2dOptions& opts, Tensor& y, Tensor* indices) {
  constexpr const char* kOp = "Pool2dForward";
  GANTRY_RETURN_IF_ERROR(internal::CheckDTypes(kOp, DType::kF32, {{"x", &x}, {"y", &y}}));
  GANTRY_RETURN_IF_ERROR(CheckPoolArgs(kOp, x.shape(), opts));
  const Shape ys = Pool2dOutputShape(x.shape(), opts);
  GANTRY_RETURN_IF_ERROR(CheckShape(kOp, "y", y, ys));
  if (opts.kind == PoolKind::kMax) {
    if (indices == nullptr) {
      return InvalidArgumentError("Pool2dForward: max pooling needs 'indices' (i32, shape of y)");
    }
    GANTRY_RETURN_IF_ERROR(CheckDType(kOp, "indices", *indices, DType::kI32));
    GANTRY_RETURN_IF_ERROR(CheckShape(kOp, "indices", *indices, ys));
  } else {
    indices = nullptr;
  }
  GANTRY_RETURN_IF_ERROR(CheckSameDevice(kOp, {&x, &y, indices}));
  GANTRY_KERNELS_DISPATCH(kOp, x.device(), Pool2dForward(x, opts, y, indices));
}

Status Pool2dBackward(const Tensor& dy, const Tensor* indices, const Pool2dOptions& opts,
                      Tensor& dx) {
  constexpr const char* kOp = "Pool2dBackward";
  GANTRY_RETURN_IF_ERROR(internal::CheckDTypes(kOp, DType::kF32, {{"dy", &dy}, {"dx", &dx}}));
  GANTRY_RETURN_IF_ERROR(CheckPoolArgs(kOp, dx.shape(), opts));
  const Shape ys = Pool2dOutputShape(dx.shape(), opts);
  GANTRY_RETURN_IF_ERROR(CheckShape(kOp, "dy", dy, ys));
  if (opts.kind == PoolKind::kMax) {
    if (indices == nullptr) {
      return InvalidArgumentError("Pool2dBackward: max pooling needs the forward 'indices'");
    }
    GANTRY_RETURN_IF_ERROR(CheckDType(kOp, "indices", *indices, DType::kI32));
    GANTRY_RETURN_IF_ERROR(CheckShape(kOp, "indices", *indices, ys));
  } else {
    indices = nullptr;
  }
  GANTRY_RETURN_IF_ERROR(CheckSameDevice(kOp, {&dy, &dx, indices}));
  GANTRY_KERNELS_DISPATCH(kOp, dy.device(), Pool2dBackward(dy, indices, opts, dx));
}

}  // namespace gantry::kernels
