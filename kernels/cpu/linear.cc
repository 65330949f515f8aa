// CPU matrix ops: GEMM-backed Matmul/Linear, bias, residual add, scale. Elementwise loops
// use the thread pool only above kElementsPerThread (small ops are faster on one thread).
#include <algorithm>

#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/parallel.h"

namespace gantry::kernels::cpu {

namespace {

constexpr double kElementsPerThread = 1 << 16;  // streaming elementwise work per extra thread
constexpr int64_t kColumnBlock = 256;           // columns per task in column sums

int64_t Rows(const Tensor& t) { return t.numel() / t.dim(-1); }

// db[j] += sum_r dy[r, j]. Parallel over column blocks so no partial buffers are needed.
void ColumnSumAccumulate(const float* dy, int64_t rows, int64_t cols, float* db) {
  const int64_t blocks = (cols + kColumnBlock - 1) / kColumnBlock;
  int threads = std::min<int>(ThreadsFor(double(rows) * cols, kElementsPerThread), blocks);
  ParallelChunks(blocks, threads, [&](int64_t blk) {
    const int64_t j0 = blk * kColumnBlock, j1 = std::min(cols, j0 + kColumnBlock);
    float acc[kColumnBlock];
    std::fill(acc, acc + (j1 - j0), 0.0f);
    for (int64_t r = 0; r < rows; ++r) {
      const float* row = dy + r * cols + j0;
#pragma omp simd
      for (int64_t j = 0; j < j1 - j0; ++j) acc[j] += row[j];
    }
    for (int64_t j = j0; j < j1; ++j) db[j] += acc[j - j0];
  });
}

}  // namespace

Status Matmul(const Tensor& a, const Tensor& b, Tensor& c, const GemmOptions& opts) {
  const int64_t a_cols = a.dim(-1), b_cols = b.dim(-1);
  const int64_t a_rows = a.numel() / a_cols, b_rows = b.numel() / b_cols;
  const int64_t m = opts.trans_a ? a_cols : a_rows;
  const int64_t k = opts.trans_a ? a_rows : a_cols;
  const int64_t n = opts.trans_b ? b_rows : b_cols;
  return Sgemm(opts.trans_a, opts.trans_b, m, n, k, opts.alpha, a.f32(), a_cols, b.f32(), b_cols,
               opts.beta, c.f32(), n);
}

Status MatmulBackward(const Tensor& a, const Tensor& b, const Tensor& dc, Tensor* da, Tensor* db) {
  const int64_t k = a.dim(-1), m = a.numel() / k, n = b.dim(-1);
  if (da != nullptr) {  // da[M,K] = dc[M,N] * b[K,N]^T
    GANTRY_RETURN_IF_ERROR(
        Sgemm(false, true, m, k, n, 1.0f, dc.f32(), n, b.f32(), n, 0.0f, da->f32(), k));
  }
  if (db != nullptr) {  // db[K,N] += a[M,K]^T * dc[M,N]
    GANTRY_RETURN_IF_ERROR(
        Sgemm(true, false, k, n, m, 1.0f, a.f32(), k, dc.f32(), n, 1.0f, db->f32(), n));
  }
  return OkStatus();
}

Status LinearForward(const Tensor& x, const Tensor& w, const Tensor* b, Tensor& y) {
  const int64_t out = w.dim(0), in = w.dim(1), rows = Rows(x);
  float beta = 0.0f;
  if (b != nullptr) {  // y starts as the broadcast bias; the GEMM accumulates onto it
    const float* bias = b->f32();
    float* yp = y.f32();
    int threads = ThreadsFor(double(rows) * out, kElementsPerThread);
    ParallelFor(rows, threads, [=](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) std::copy(bias, bias + out, yp + r * out);
    });
    beta = 1.0f;
  }
  return Sgemm(false, true, rows, out, in, 1.0f, x.f32(), in, w.f32(), in, beta, y.f32(), out);
}

Status LinearBackward(const Tensor& x, const Tensor& w, const Tensor& dy, Tensor* dx, Tensor& dw,
                      Tensor* db) {
  const int64_t out = w.dim(0), in = w.dim(1), rows = Rows(x);
  if (dx != nullptr) {  // dx[rows, in] = dy[rows, out] * w[out, in]
    GANTRY_RETURN_IF_ERROR(
        Sgemm(false, false, rows, in, out, 1.0f, dy.f32(), out, w.f32(), in, 0.0f, dx->f32(), in));
  }
  // dw[out, in] += dy^T * x (Sgemm runs long transposed-A products in K blocks).
  GANTRY_RETURN_IF_ERROR(
      Sgemm(true, false, out, in, rows, 1.0f, dy.f32(), out, x.f32(), in, 1.0f, dw.f32(), in));
  if (db != nullptr) ColumnSumAccumulate(dy.f32(), rows, out, db->f32());
  return OkStatus();
}

Status BiasAddForward(Tensor& y, const Tensor& b) {
  const int64_t n = y.dim(-1), rows = Rows(y);
  float* yp = y.f32();
  const float* bp = b.f32();
  int threads = ThreadsFor(double(rows) * n, kElementsPerThread);
  ParallelFor(rows, threads, [=](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      float* row = yp + r * n;
#pragma omp simd
      for (int64_t j = 0; j < n; ++j) row[j] += bp[j];
    }
  });
  return OkStatus();
}

Status BiasAddBackward(const Tensor& dy, Tensor& db) {
  ColumnSumAccumulate(dy.f32(), Rows(dy), dy.dim(-1), db.f32());
  return OkStatus();
}

Status Add(const Tensor& a, const Tensor& b, Tensor& y) {
  const int64_t n = a.numel();
  const float* ap = a.f32();
  const float* bp = b.f32();
  float* yp = y.f32();
  int threads = ThreadsFor(double(n), kElementsPerThread);
  ParallelFor(n, threads, [=](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) yp[i] = ap[i] + bp[i];
  });
  return OkStatus();
}

Status AddInPlace(Tensor& y, const Tensor& x, float alpha) {
  const int64_t n = y.numel();
  const float* xp = x.f32();
  float* yp = y.f32();
  int threads = ThreadsFor(double(n), kElementsPerThread);
  if (alpha == 1.0f) {
    ParallelFor(n, threads, [=](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) yp[i] += xp[i];
    });
  } else {
    ParallelFor(n, threads, [=](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) yp[i] += alpha * xp[i];
    });
  }
  return OkStatus();
}

Status Scale(Tensor& t, float s) {
  const int64_t n = t.numel();
  float* p = t.f32();
  int threads = ThreadsFor(double(n), kElementsPerThread);
  ParallelFor(n, threads, [=](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) p[i] *= s;
  });
  return OkStatus();
}

}  // namespace gantry::kernels::cpu
