// Public matrix ops: shape/dtype/device checks shared by both backends, then dispatch.
#include "kernels/linear.h"

#include "kernels/dispatch.h"

namespace gantry::kernels {

namespace {

using internal::CheckDTypes;
using internal::CheckHasLastDim;
using internal::CheckNumel;

// `t` is [.., last] with rows * last elements.
Status CheckRowsLast(const char* op, const char* name, const Tensor& t, int64_t rows,
                     int64_t last) {
  GANTRY_RETURN_IF_ERROR(CheckHasLastDim(op, name, t));
  if (t.dim(-1) != last || t.numel() != rows * last) {
    return InvalidArgumentError(std::string(op) + ": tensor '" + name + "' has shape " +
                                ShapeToString(t.shape()) + " but [" + std::to_string(rows) +
                                ", " + std::to_string(last) +
                                "] (leading dims folded into rows) is required");
  }
  return OkStatus();
}

struct MatDims {
  int64_t m, n, k;
};

StatusOr<MatDims> MatmulDims(const char* op, const Tensor& a, const Tensor& b, bool ta,
                             bool tb) {
  GANTRY_RETURN_IF_ERROR(CheckHasLastDim(op, "a", a));
  GANTRY_RETURN_IF_ERROR(CheckHasLastDim(op, "b", b));
  int64_t a_rows = a.numel() / a.dim(-1), a_cols = a.dim(-1);
  int64_t b_rows = b.numel() / b.dim(-1), b_cols = b.dim(-1);
  MatDims d{ta ? a_cols : a_rows, tb ? b_rows : b_cols, ta ? a_rows : a_cols};
  int64_t kb = tb ? b_cols : b_rows;
  if (d.k != kb) {
    return InvalidArgumentError(std::string(op) + ": inner dims differ: op(a) of a " +
                                ShapeToString(a.shape()) + (ta ? " (transposed)" : "") +
                                " has K=" + std::to_string(d.k) + " but op(b) of b " +
                                ShapeToString(b.shape()) + (tb ? " (transposed)" : "") +
                                " has K=" + std::to_string(kb));
  }
  return d;
}

}  // namespace

Status Matmul(const Tensor& a, const Tensor& b, Tensor& c, const GemmOptions& opts) {
  constexpr const char* kOp = "Matmul";
  GANTRY_RETURN_IF_ERROR(CheckDTypes(kOp, DType::kF32, {{"a", &a}, {"b", &b}, {"c", &c}}));
  GANTRY_RETURN_IF_ERROR(CheckSameDevice(kOp, {&a, &b, &c}));
  GANTRY_ASSIGN_OR_RETURN(MatDims d, MatmulDims(kOp, a, b, opts.trans_a, opts.trans_b));
  GANTRY_RETURN_IF_ERROR(CheckRowsLast(kOp, "c", c, d.m, d.n));
  GANTRY_KERNELS_DISPATCH(kOp, a.device(), Matmul(a, b, c, opts));
}

Status MatmulBackward(const Tensor& a, const Tensor& b, const Tensor& dc, Tensor* da,
                      Tensor* db) {
  constexpr const char* kOp = "MatmulBackward";
  GANTRY_RETURN_IF_ERROR(
      CheckDTypes(kOp, DType::kF32, {{"a", &a}, {"b", &b}, {"dc", &dc}, {"da", da}, {"db", db}}));
  GANTRY_RETURN_IF_ERROR(CheckSameDevice(kOp, {&a, &b, &dc, da, db}));
  GANTRY_ASSIGN_OR_RETURN(MatDims d, MatmulDims(kOp, a, b, false, false));
  GANTRY_RETURN_IF_ERROR(CheckRowsLast(kOp, "dc", dc, d.m, d.n));
  if (da != nullptr) GANTRY_RETURN_IF_ERROR(CheckShape(kOp, "da", *da, a.shape()));
  if (db != nullptr) GANTRY_RETURN_IF_ERROR(CheckShape(kOp, "db", *db, b.shape()));
  GANTRY_KERNELS_DISPATCH(kOp, a.device(), MatmulBackward(a, b, dc, da, db));
}

Status LinearForward(const Tensor& x, const Tensor& w, const Tensor* b, Tensor& y) {
  constexpr const char* kOp = "LinearForward";
  GANTRY_RETURN_IF_ERROR(
      CheckDTypes(kOp, DType::kF32, {{"x", &x}, {"w", &w}, {"b", b}, {"y", &y}}));
  GANTRY_RETURN_IF_ERROR(CheckSameDevice(kOp, {&x, &w, b, &y}));
  GANTRY_RETURN_IF_ERROR(internal::CheckRank(kOp, "w", w, 2));
  GANTRY_RETURN_IF_ERROR(CheckHasLastDim(kOp, "x", x));
  const int64_t out = w.dim(0), in = w.dim(1), rows = x.numel() / x.dim(-1);
  GANTRY_RETURN_IF_ERROR(CheckRowsLast(kOp, "x", x, rows, in));
  GANTRY_RETURN_IF_ERROR(CheckRowsLast(kOp, "y", y, rows, out));
  if (b != nullptr) GANTRY_RETURN_IF_ERROR(CheckShape(kOp, "b", *b, {out}));
  GANTRY_KERNELS_DISPATCH(kOp, x.device(), LinearForward(x, w, b, y));
}

Status LinearBackward(const Tensor& x, const Tensor& w, const Tensor& dy, Tensor* dx, Tensor& dw,
                      Tensor* db) {
  constexpr const char* kOp = "LinearBackward";
  GANTRY_RETURN_IF_ERROR(CheckDTypes(
      kOp, DType::kF32,
      {{"x", &x}, {"w", &w}, {"dy", &dy}, {"dx", dx}, {"dw", &dw}, {"db", db}}));
  GANTRY_RETURN_IF_ERROR(CheckSameDevice(kOp, {&x, &w, &dy, dx, &dw, db}));
  GANTRY_RETURN_IF_ERROR(internal::CheckRank(kOp, "w", w, 2));
  GANTRY_RETURN_IF_ERROR(CheckHasLastDim(kOp, "x", x));
  const int64_t out = w.dim(0), in = w.dim(1), rows = x.numel() / x.dim(-1);
  GANTRY_RETURN_IF_ERROR(CheckRowsLast(kOp, "x", x, rows, in));
  GANTRY_RETURN_IF_ERROR(CheckRowsLast(kOp, "dy", dy, rows, out));
  if (dx != nullptr) GANTRY_RETURN_IF_ERROR(CheckRowsLast(kOp, "dx", *dx, rows, in));
  GANTRY_RETURN_IF_ERROR(CheckShape(kOp, "dw", dw, w.shape()));
  if (db != nullptr) GANTRY_RETURN_IF_ERROR(CheckShape(kOp, "db", *db, {out}));
  GANTRY_KERNELS_DISPATCH(kOp, x.device(), LinearBackward(x, w, dy, dx, dw, db));
}

Status BiasAddForward(Tensor& y, const Tensor& b) {
  constexpr const char* kOp = "BiasAddForward";
  GANTRY_RETURN_IF_ERROR(CheckDTypes(kOp, DType::kF32, {{"y", &y}, {"b", &b}}));
  GANTRY_RETURN_IF_ERROR(CheckSameDevice(kOp, {&y, &b}));
  GANTRY_RETURN_IF_ERROR(CheckHasLastDim(kOp, "y", y));
  GANTRY_RETURN_IF_ERROR(CheckShape(kOp, "b", b, {y.dim(-1)}));
  GANTRY_KERNELS_DISPATCH(kOp, y.device(), BiasAddForward(y, b));
}

Status BiasAddBackward(const Tensor& dy, Tensor& db) {
  constexpr const char* kOp = "BiasAddBackward";
  GANTRY_RETURN_IF_ERROR(CheckDTypes(kOp, DType::kF32, {{"dy", &dy}, {"db", &db}}));
  GANTRY_RETURN_IF_ERROR(CheckSameDevice(kOp, {&dy, &db}));
  GANTRY_RETURN_IF_ERROR(CheckHasLastDim(kOp, "dy", dy));
  GANTRY_RETURN_IF_ERROR(CheckShape(kOp, "db", db, {dy.dim(-1)}));
  GANTRY_KERNELS_DISPATCH(kOp, dy.device(), BiasAddBackward(dy, db));
}

Status Add(const Tensor& a, const Tensor& b, Tensor& y) {
  constexpr const char* kOp = "Add";
  GANTRY_RETURN_IF_ERROR(CheckDTypes(kOp, DType::kF32, {{"a", &a}, {"b", &b}, {"y", &y}}));
  GANTRY_RETURN_IF_ERROR(CheckSameDevice(kOp, {&a, &b, &y}));
  GANTRY_RETURN_IF_ERROR(CheckNumel(kOp, "b", b, a.numel()));
  GANTRY_RETURN_IF_ERROR(CheckNumel(kOp, "y", y, a.numel()));
  GANTRY_KERNELS_DISPATCH(kOp, a.device(), Add(a, b, y));
}

Status AddInPlace(Tensor& y, const Tensor& x, float alpha) {
  constexpr const char* kOp = "AddInPlace";
  GANTRY_RETURN_IF_ERROR(CheckDTypes(kOp, DType::kF32, {{"y", &y}, {"x", &x}}));
  GANTRY_RETURN_IF_ERROR(CheckSameDevice(kOp, {&y, &x}));
  GANTRY_RETURN_IF_ERROR(CheckNumel(kOp, "x", x, y.numel()));
  GANTRY_KERNELS_DISPATCH(kOp, y.device(), AddInPlace(y, x, alpha));
}

Status Scale(Tensor& t, float s) {
  constexpr const char* kOp = "Scale";
  GANTRY_RETURN_IF_ERROR(CheckDTypes(kOp, DType::kF32, {{"t", &t}}));
  GANTRY_KERNELS_DISPATCH(kOp, t.device(), Scale(t, s));
}

}  // namespace gantry::kernels
