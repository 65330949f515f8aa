// Row-major SGEMM: oneDNN dnnl_sgemm (JIT, AVX-512 where the CPU has it), always with a team of
// one; large products are cut into tiles of C that the kernels' thread pool runs (parallel.h),
// so a preempted thread never stalls the others at an OpenMP barrier. Plus a portable
// cache-blocked fallback for builds without oneDNN.
#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <string>
#include <vector>

#include "base/tunables.h"
#include "gantry_config.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/parallel.h"
#include "kernels/runtime.h"
#if GANTRY_WITH_DNNL
#include <dnnl.h>
#endif

namespace gantry::kernels::cpu {

namespace {

// Flops one extra thread must get before a GEMM is split: below it, thread start-up and the
// split's lost cache reuse cost more than they save (mlp-mnist's 128x784x512 runs best on 1).
// Override with GANTRY_GEMM_MIN_FLOPS_PER_THREAD.
double GemmMinFlopsPerThread() {
  static const double value = std::max(0.0, TunableDouble("GEMM_MIN_FLOPS_PER_THREAD", 30e6));
  return value;
}

// The same for bf16 products (AMX: several times faster per flop than f32, so a split pays
// only at more work; but the helper thread is idle otherwise). Measured at 2 threads, mlp-
// mnist bf16: 24e6 113.6k, 12e6 116.1k, 6e6 112.5k samples/s; 240e6 (the old 8x the f32
// setting, which split none of its products) 102k. Override with
// GANTRY_BF16_GEMM_MIN_FLOPS_PER_THREAD.
double Bf16GemmMinFlopsPerThread() {
  static const double value = std::max(0.0, TunableDouble("BF16_GEMM_MIN_FLOPS_PER_THREAD", 12e6));
  return value;
}

Status CheckLeadingDims(bool ta, bool tb, int64_t m, int64_t n, int64_t k, int64_t lda, int64_t ldb,
                        int64_t ldc) {
  int64_t need_a = ta ? m : k;
  int64_t need_b = tb ? k : n;
  if (m < 0 || n < 0 || k < 0 || lda < std::max<int64_t>(1, need_a) ||
      ldb < std::max<int64_t>(1, need_b) || ldc < std::max<int64_t>(1, n)) {
    return InternalError("Sgemm: inconsistent sizes m=" + std::to_string(m) +
                         " n=" + std::to_string(n) + " k=" + std::to_string(k) +
                         " lda=" + std::to_string(lda) + " ldb=" + std::to_string(ldb) +
                         " ldc=" + std::to_string(ldc));
  }
  return OkStatus();
}

void ScaleRows(int64_t m, int64_t n, float beta, float* c, int64_t ldc) {
  for (int64_t i = 0; i < m; ++i) {
    float* row = c + i * ldc;
    if (beta == 0.0f) {
      std::fill(row, row + n, 0.0f);
    } else if (beta != 1.0f) {
      for (int64_t j = 0; j < n; ++j) row[j] *= beta;
    }
  }
}

// Sets this thread's OpenMP team size for the enclosed oneDNN call, restoring it afterwards.
class OmpThreadsScope {
 public:
  explicit OmpThreadsScope(int want) : prev_(omp_get_max_threads()) {
    if (want != prev_) omp_set_num_threads(want);
  }
  ~OmpThreadsScope() {
    if (omp_get_max_threads() != prev_) omp_set_num_threads(prev_);
  }

 private:
  int prev_;
};

constexpr int64_t kPackK = 256;  // rows of op(B) per packed block (L2-resident with kPackN)
constexpr int64_t kPackN = 512;  // columns per packed block: one C row segment = 2 KiB

}  // namespace

Status SgemmPortable(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
                     int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  GANTRY_RETURN_IF_ERROR(CheckLeadingDims(ta, tb, m, n, k, lda, ldb, ldc));
  ScaleRows(m, n, beta, c, ldc);
  if (m == 0 || n == 0 || k == 0 || alpha == 0.0f) return OkStatus();
  thread_local std::vector<float> packed;  // grows once to kPackK * kPackN floats
  packed.resize(kPackK * kPackN);
  const int threads = ThreadsFor(2.0 * m * n * k, GemmMinFlopsPerThread());
  for (int64_t j0 = 0; j0 < n; j0 += kPackN) {
    const int64_t nb = std::min(kPackN, n - j0);
    for (int64_t p0 = 0; p0 < k; p0 += kPackK) {
      const int64_t kb = std::min(kPackK, k - p0);
      float* pb = packed.data();
      for (int64_t p = 0; p < kb; ++p) {  // pb[p][j] = alpha * op(B)[p0 + p][j0 + j]
        for (int64_t j = 0; j < nb; ++j) {
          float v = tb ? b[(j0 + j) * ldb + p0 + p] : b[(p0 + p) * ldb + j0 + j];
          pb[p * nb + j] = alpha * v;
        }
      }
      ParallelFor(m, threads, [=](int64_t i_begin, int64_t i_end) {
        for (int64_t i = i_begin; i < i_end; ++i) {
          float* crow = c + i * ldc + j0;
          for (int64_t p = 0; p < kb; ++p) {
            const float aip = ta ? a[(p0 + p) * lda + i] : a[i * lda + p0 + p];
            const float* brow = pb + p * nb;
#pragma omp simd
            for (int64_t j = 0; j < nb; ++j) crow[j] += aip * brow[j];
          }
        }
      });
    }
  }
  return OkStatus();
}

#if GANTRY_WITH_DNNL
namespace {

struct GemmArgs {
  bool ta, tb;
  int64_t m, n, k;
  float alpha;
  const float* a;
  int64_t lda;
  const float* b;
  int64_t ldb;
  float beta;
  float* c;
  int64_t ldc;
};

// oneDNN's transposed-A kernel slows down 1.3-2x once its K panel outgrows the caches
// (measured on gpt-tiny's weight gradients, lm_head 8192x256x2048 and fc 1024x256x2048), so
// such products run as a sequence of K blocks accumulating into C.
constexpr int64_t kTransAKBlock = 256;

// Runs op(A)[mb, k] op(B)[k, nb] into c (ldc) on this thread, in K blocks of kb.
dnnl_status_t SgemmKBlocks(char ta, char tb, int64_t mb, int64_t nb, int64_t k, int64_t kb,
                           float alpha, const float* a, int64_t lda, const float* b, int64_t ldb,
                           float beta, float* c, int64_t ldc) {
  for (int64_t p0 = 0; p0 < k; p0 += kb) {
    const int64_t kk = std::min(kb, k - p0);
    const float* ap = a + (ta == 'T' ? p0 * lda : p0);
    const float* bp = b + (tb == 'T' ? p0 : p0 * ldb);
    const dnnl_status_t st = dnnl_sgemm(ta, tb, mb, nb, kk, alpha, ap, lda, bp, ldb, beta, c, ldc);
    if (st != dnnl_success) return st;
    beta = 1.0f;
  }
  return dnnl_success;
}

// c[i, j] = beta * c[i, j] + t[j, i] for an [mb, nb] c and an [nb, mb] t, in cache blocks.
void AddTransposed(const float* t, int64_t mb, int64_t nb, float beta, float* c, int64_t ldc) {
  constexpr int64_t kBlock = 32;
  for (int64_t i0 = 0; i0 < mb; i0 += kBlock) {
    const int64_t i1 = std::min(mb, i0 + kBlock);
    for (int64_t j0 = 0; j0 < nb; j0 += kBlock) {
      const int64_t j1 = std::min(nb, j0 + kBlock);
      for (int64_t i = i0; i < i1; ++i) {
        float* crow = c + i * ldc;
        if (beta == 0.0f) {
          for (int64_t j = j0; j < j1; ++j) crow[j] = t[j * mb + i];
        } else {
          for (int64_t j = j0; j < j1; ++j) crow[j] = beta * crow[j] + t[j * mb + i];
        }
      }
    }
  }
}

// C[i0:i0+mb, j0:j0+nb] of the product, on this thread (oneDNN with a team of one).
// A tall transposed-A product (weight gradients dW[out, in] = dY^T X with out > in) runs as
// C^T = B^T A into a per-thread scratch and is added back transposed: oneDNN's kernel is
// ~15-20% faster on the wide form (lm_head 8192x256x2048: 126 -> 149 GFLOP/s), and the
// transposed add costs far less than that.
dnnl_status_t SgemmTile(const GemmArgs& g, int64_t i0, int64_t mb, int64_t j0, int64_t nb) {
  const char ta = g.ta ? 'T' : 'N', tb = g.tb ? 'T' : 'N';
  const float* a = g.a + (g.ta ? i0 : i0 * g.lda);
  const float* b = g.b + (g.tb ? j0 * g.ldb : j0);
  float* c = g.c + i0 * g.ldc + j0;
  const int64_t kb = g.ta && g.k > 2 * kTransAKBlock ? kTransAKBlock : g.k;
  OmpThreadsScope single(1);
  if (g.ta && !g.tb && mb >= 2 * nb && nb >= 64) {
    thread_local std::vector<float> scratch;  // grows to the largest tile, then is reused
    if (scratch.size() < size_t(mb * nb)) scratch.resize(size_t(mb * nb));
    const dnnl_status_t st = SgemmKBlocks('T', 'N', nb, mb, g.k, kb, g.alpha, b, g.ldb, a, g.lda,
                                          0.0f, scratch.data(), mb);
    if (st == dnnl_success) AddTransposed(scratch.data(), mb, nb, g.beta, c, g.ldc);
    return st;
  }
  return SgemmKBlocks(ta, tb, mb, nb, g.k, kb, g.alpha, a, g.lda, b, g.ldb, g.beta, c, g.ldc);
}

}  // namespace
#endif

GemmTiling ChooseGemmTiling(int64_t m, int64_t n, int threads, int64_t align) {
  const bool along_n = m < n;
  const int64_t dim = along_n ? n : m;
  int64_t tile = (dim + threads - 1) / threads;
  tile = std::max(align, (tile + align - 1) / align * align);
  return {along_n, tile, (dim + tile - 1) / tile};
}

Status Sgemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
             int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
#if GANTRY_WITH_DNNL
  GANTRY_RETURN_IF_ERROR(CheckLeadingDims(ta, tb, m, n, k, lda, ldb, ldc));
  if (m == 0 || n == 0) return OkStatus();
  if (k == 0) {
    ScaleRows(m, n, beta, c, ldc);
    return OkStatus();
  }
  const GemmArgs args{ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc};
  const int threads = ThreadsFor(2.0 * m * n * k, GemmMinFlopsPerThread());
  if (CpuMatmulPrecision() == MatmulPrecision::kBf16 && 2.0 * m * n * k >= Bf16MinFlops()) {
    const int bf16_threads = ThreadsFor(2.0 * m * n * k, Bf16GemmMinFlopsPerThread());
    return SgemmBf16(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, bf16_threads);
  }
  dnnl_status_t st = dnnl_success;
  if (threads <= 1) {
    st = SgemmTile(args, 0, m, 0, n);
  } else {
    // Tile edges on multiples of 16 (one AVX-512 vector of floats). One wide tile per thread
    // beat 4 narrow ones (dynamic balance, but A re-packed per tile and 64-column products run
    // slower): 2 threads, mlp-mnist 67k -> 71-75k samples/s, gpt-tiny 8.2k -> 8.4-8.5k tokens/s.
    const GemmTiling t = ChooseGemmTiling(m, n, threads, 16);
    std::atomic<int> first_error{dnnl_success};
    ParallelChunks(t.tiles, threads, [&](int64_t i) {
      const int64_t dim = t.along_n ? n : m;
      const int64_t begin = i * t.tile, size = std::min(t.tile, dim - begin);
      const dnnl_status_t s =
          t.along_n ? SgemmTile(args, 0, m, begin, size) : SgemmTile(args, begin, size, 0, n);
      int expected = dnnl_success;
      if (s != dnnl_success) first_error.compare_exchange_strong(expected, s);
    });
    st = static_cast<dnnl_status_t>(first_error.load());
  }
  if (st != dnnl_success) {
    return InternalError("dnnl_sgemm failed with status " + std::to_string(static_cast<int>(st)) +
                         " for m=" + std::to_string(m) + " n=" + std::to_string(n) +
                         " k=" + std::to_string(k));
  }
  return OkStatus();
#else
  return SgemmPortable(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
#endif
}

}  // namespace gantry::kernels::cpu
