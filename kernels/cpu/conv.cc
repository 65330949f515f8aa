// CPU conv2d as im2col + GEMM per image (1x1/stride-1/no-pad convs skip im2col), and
// max/avg pooling over (n, c) planes. The im2col buffer is the caller's workspace.
#include <algorithm>
#include <cmath>

#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/parallel.h"

namespace gantry::kernels::cpu {

namespace {

constexpr double kElementsPerThread = 1 << 15;

struct ConvGeom {
  int64_t n, cin, h, w, cout, kh, kw, oh, ow, stride, pad;
  int64_t k() const { return cin * kh * kw; }  // GEMM inner dim
  int64_t pixels() const { return oh * ow; }   // GEMM columns per image
  bool direct() const { return kh == 1 && kw == 1 && stride == 1 && pad == 0; }
};

ConvGeom GeomOf(const Shape& x, const Shape& w, const Conv2dOptions& o) {
  const int64_t oh = (x[2] + 2 * o.padding - w[2]) / o.stride + 1;
  const int64_t ow = (x[3] + 2 * o.padding - w[3]) / o.stride + 1;
  return {x[0], x[1], x[2], x[3], w[0], w[2], w[3], oh, ow, o.stride, o.padding};
}

// col[(ci, i, j)][oh, ow] = x[ci, oh*s - p + i, ow*s - p + j] (0 outside the image).
void Im2Col(const ConvGeom& g, const float* x, float* col) {
  const int64_t rows = g.k();
  const int threads = ThreadsFor(double(rows) * g.pixels(), kElementsPerThread);
  ParallelFor(rows, threads, [=](int64_t r_begin, int64_t r_end) {
    for (int64_t r = r_begin; r < r_end; ++r) {
      const int64_t ci = r / (g.kh * g.kw), i = (r / g.kw) % g.kh, j = r % g.kw;
      const float* plane = x + ci * g.h * g.w;
      float* dst = col + r * g.pixels();
      for (int64_t y = 0; y < g.oh; ++y) {
        const int64_t iy = y * g.stride - g.pad + i;
        float* d = dst + y * g.ow;
        if (iy < 0 || iy >= g.h) {
          for (int64_t xo = 0; xo < g.ow; ++xo) d[xo] = 0.0f;
          continue;
        }
        const float* src = plane + iy * g.w;
        for (int64_t xo = 0; xo < g.ow; ++xo) {
          const int64_t ix = xo * g.stride - g.pad + j;
          d[xo] = (ix >= 0 && ix < g.w) ? src[ix] : 0.0f;
        }
      }
    }
  });
}

// dx[ci, ...] += col scattered back (the adjoint of Im2Col). Parallel over input channels:
// each channel's rows write only that channel's plane.
void Col2ImAdd(const ConvGeom& g, const float* col, float* dx) {
  const int threads = ThreadsFor(double(g.k()) * g.pixels(), kElementsPerThread);
  ParallelFor(g.cin, threads, [=](int64_t ci_begin, int64_t ci_end) {
    for (int64_t ci = ci_begin; ci < ci_end; ++ci) {
      float* plane = dx + ci * g.h * g.w;
      for (int64_t i = 0; i < g.kh; ++i) {
        for (int64_t j = 0; j < g.kw; ++j) {
          const float* src = col + ((ci * g.kh + i) * g.kw + j) * g.pixels();
          for (int64_t y = 0; y < g.oh; ++y) {
            const int64_t iy = y * g.stride - g.pad + i;
            if (iy < 0 || iy >= g.h) continue;
            for (int64_t xo = 0; xo < g.ow; ++xo) {
              const int64_t ix = xo * g.stride - g.pad + j;
              if (ix >= 0 && ix < g.w) plane[iy * g.w + ix] += src[y * g.ow + xo];
            }
          }
        }
      }
    }
  });
}

}  // namespace

int64_t Conv2dWorkspaceElements(const Shape& x, const Shape& w, const Conv2dOptions& opts) {
  const ConvGeom g = GeomOf(x, w, opts);
  return g.direct() ? 0 : g.k() * g.pixels();
}

Status Conv2dForward(const Tensor& x, const Tensor& w, const Tensor* b, const Conv2dOptions& opts,
                     Tensor& y, Tensor& workspace) {
  const ConvGeom g = GeomOf(x.shape(), w.shape(), opts);
  for (int64_t n = 0; n < g.n; ++n) {
    const float* xn = x.f32() + n * g.cin * g.h * g.w;
    float* yn = y.f32() + n * g.cout * g.pixels();
    const float* col = xn;
    if (!g.direct()) {
      Im2Col(g, xn, workspace.f32());
      col = workspace.f32();
    }
    float beta = 0.0f;
    if (b != nullptr) {
      for (int64_t co = 0; co < g.cout; ++co) {
        std::fill(yn + co * g.pixels(), yn + (co + 1) * g.pixels(), b->f32()[co]);
      }
      beta = 1.0f;
    }
    // y_n[Cout, P] = w[Cout, K] * col[K, P]
    GANTRY_RETURN_IF_ERROR(Sgemm(false, false, g.cout, g.pixels(), g.k(), 1.0f, w.f32(), g.k(), col,
                                 g.pixels(), beta, yn, g.pixels()));
  }
  return OkStatus();
}

Status Conv2dBackward(const Tensor& x, const Tensor& w, const Tensor& dy, const Conv2dOptions& opts,
                      Tensor* dx, Tensor& dw, Tensor* db, Tensor& workspace) {
  const ConvGeom g = GeomOf(x.shape(), w.shape(), opts);
  const int64_t p = g.pixels();
  for (int64_t n = 0; n < g.n; ++n) {
    const float* xn = x.f32() + n * g.cin * g.h * g.w;
    const float* dyn = dy.f32() + n * g.cout * p;
    const float* col = xn;
    if (!g.direct()) {
      Im2Col(g, xn, workspace.f32());
      col = workspace.f32();
    }
    // dw[Cout, K] += dy_n[Cout, P] * col[K, P]^T
    GANTRY_RETURN_IF_ERROR(
        Sgemm(false, true, g.cout, g.k(), p, 1.0f, dyn, p, col, p, 1.0f, dw.f32(), g.k()));
    if (db != nullptr) {
      float* dbp = db->f32();
      for (int64_t co = 0; co < g.cout; ++co) {
        float s = 0.0f;
#pragma omp simd reduction(+ : s)
        for (int64_t i = 0; i < p; ++i) s += dyn[co * p + i];
        dbp[co] += s;
      }
    }
    if (dx == nullptr) continue;
    float* dxn = dx->f32() + n * g.cin * g.h * g.w;
    if (g.direct()) {  // dx_n[Cin, P] = w[Cout, Cin]^T * dy_n
      GANTRY_RETURN_IF_ERROR(
          Sgemm(true, false, g.k(), p, g.cout, 1.0f, w.f32(), g.k(), dyn, p, 0.0f, dxn, p));
      continue;
    }
    // dcol[K, P] = w^T * dy_n (reusing the workspace), then scatter into dx_n.
    float* dcol = workspace.f32();
    GANTRY_RETURN_IF_ERROR(
        Sgemm(true, false, g.k(), p, g.cout, 1.0f, w.f32(), g.k(), dyn, p, 0.0f, dcol, p));
    std::fill(dxn, dxn + g.cin * g.h * g.w, 0.0f);
    Col2ImAdd(g, dcol, dxn);
  }
  return OkStatus();
}

Status Pool2dForward(const Tensor& x, const Pool2dOptions& opts, Tensor& y, Tensor* indices) {
  const int64_t planes = x.dim(0) * x.dim(1), h = x.dim(2), w = x.dim(3);
  const int64_t oh = y.dim(2), ow = y.dim(3);
  const bool is_max = opts.kind == PoolKind::kMax;
  const float inv_area = 1.0f / static_cast<float>(opts.kernel * opts.kernel);
  const int threads = ThreadsFor(double(planes) * h * w, kElementsPerThread);
  ParallelFor(planes, threads, [=](int64_t pl_begin, int64_t pl_end) {
    for (int64_t pl = pl_begin; pl < pl_end; ++pl) {
      const float* src = x.f32() + pl * h * w;
      float* dst = y.f32() + pl * oh * ow;
      int32_t* idx = is_max ? indices->i32() + pl * oh * ow : nullptr;
      for (int64_t oy = 0; oy < oh; ++oy) {
        const int64_t y0 = oy * opts.stride - opts.padding;
        for (int64_t ox = 0; ox < ow; ++ox) {
          const int64_t x0 = ox * opts.stride - opts.padding;
          float best = -INFINITY, sum = 0.0f;
          int64_t best_at = -1;
          for (int64_t iy = std::max<int64_t>(y0, 0); iy < std::min(y0 + opts.kernel, h); ++iy) {
            for (int64_t ix = std::max<int64_t>(x0, 0); ix < std::min(x0 + opts.kernel, w); ++ix) {
              const float v = src[iy * w + ix];
              sum += v;
              if (best_at < 0 || v > best || std::isnan(v)) {
                best = v;
                best_at = iy * w + ix;
              }
            }
          }
          dst[oy * ow + ox] = is_max ? best : sum * inv_area;
          if (is_max) idx[oy * ow + ox] = static_cast<int32_t>(best_at);
        }
      }
    }
  });
  return OkStatus();
}

Status Pool2dBackward(const Tensor& dy, const Tensor* indices, const Pool2dOptions& opts,
                      Tensor& dx) {
  const int64_t planes = dx.dim(0) * dx.dim(1), h = dx.dim(2), w = dx.dim(3);
  const int64_t oh = dy.dim(2), ow = dy.dim(3);
  const bool is_max = opts.kind == PoolKind::kMax;
  const float inv_area = 1.0f / static_cast<float>(opts.kernel * opts.kernel);
  const int threads = ThreadsFor(double(planes) * h * w, kElementsPerThread);
  ParallelFor(planes, threads, [=](int64_t pl_begin, int64_t pl_end) {
    for (int64_t pl = pl_begin; pl < pl_end; ++pl) {
      float* dst = dx.f32() + pl * h * w;
      const float* g = dy.f32() + pl * oh * ow;
      std::fill(dst, dst + h * w, 0.0f);
      if (is_max) {
        const int32_t* idx = indices->i32() + pl * oh * ow;
        for (int64_t o = 0; o < oh * ow; ++o) {
          if (idx[o] >= 0 && idx[o] < h * w) dst[idx[o]] += g[o];
        }
        continue;
      }
      for (int64_t oy = 0; oy < oh; ++oy) {
        const int64_t y0 = oy * opts.stride - opts.padding;
        for (int64_t ox = 0; ox < ow; ++ox) {
          const int64_t x0 = ox * opts.stride - opts.padding;
          const float share = g[oy * ow + ox] * inv_area;
          for (int64_t iy = std::max<int64_t>(y0, 0); iy < std::min(y0 + opts.kernel, h); ++iy) {
            for (int64_t ix = std::max<int64_t>(x0, 0); ix < std::min(x0 + opts.kernel, w); ++ix) {
              dst[iy * w + ix] += share;
            }
          }
        }
      }
    }
  });
  return OkStatus();
}

}  // namespace gantry::kernels::cpu
