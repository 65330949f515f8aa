// Row-major SGEMM: oneDNN dnnl_sgemm (JIT, AVX-512 where the CPU has it) with a per-call
// thread count, and a portable cache-blocked fallback for builds without oneDNN.
#include <omp.h>

#include <algorithm>
#include <cstdlib>
#include <string>
#include <vector>

#include "gantry_config.h"
#include "kernels/cpu/cpu_ops.h"
#if GANTRY_WITH_DNNL
#include <dnnl.h>
#endif

namespace gantry::kernels::cpu {

namespace {

// Flops one extra thread must get before a GEMM is split: below it, thread start-up and the
// split's lost cache reuse cost more than they save (mlp-mnist's 128x784x512 runs best on 1).
// Override with GANTRY_GEMM_MIN_FLOPS_PER_THREAD.
double GemmMinFlopsPerThread() {
  static const double value = [] {
    const char* env = std::getenv("GANTRY_GEMM_MIN_FLOPS_PER_THREAD");
    return env != nullptr ? std::atof(env) : 30e6;
  }();
  return value;
}

Status CheckLeadingDims(bool ta, bool tb, int64_t m, int64_t n, int64_t k, int64_t lda,
                        int64_t ldb, int64_t ldc) {
  int64_t need_a = ta ? m : k;
  int64_t need_b = tb ? k : n;
  if (m < 0 || n < 0 || k < 0 || lda < std::max<int64_t>(1, need_a) ||
      ldb < std::max<int64_t>(1, need_b) || ldc < std::max<int64_t>(1, n)) {
    return InternalError("Sgemm: inconsistent sizes m=" + std::to_string(m) + " n=" +
                         std::to_string(n) + " k=" + std::to_string(k) + " lda=" +
                         std::to_string(lda) + " ldb=" + std::to_string(ldb) + " ldc=" +
                         std::to_string(ldc));
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

constexpr int64_t kPackK = 256;   // rows of op(B) per packed block (L2-resident with kPackN)
constexpr int64_t kPackN = 512;   // columns per packed block: one C row segment = 2 KiB

}  // namespace

Status SgemmPortable(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha,
                     const float* a, int64_t lda, const float* b, int64_t ldb, float beta,
                     float* c, int64_t ldc) {
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
#pragma omp parallel for num_threads(threads) if (threads > 1) schedule(static)
      for (int64_t i = 0; i < m; ++i) {
        float* crow = c + i * ldc + j0;
        for (int64_t p = 0; p < kb; ++p) {
          const float aip = ta ? a[(p0 + p) * lda + i] : a[i * lda + p0 + p];
          const float* brow = pb + p * nb;
#pragma omp simd
          for (int64_t j = 0; j < nb; ++j) crow[j] += aip * brow[j];
        }
      }
    }
  }
  return OkStatus();
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
  const bool nested = omp_in_parallel();
  const int threads = nested ? 1 : ThreadsFor(2.0 * m * n * k, GemmMinFlopsPerThread());
  dnnl_status_t st;
  if (nested) {
    st = dnnl_sgemm(ta ? 'T' : 'N', tb ? 'T' : 'N', m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
  } else {
    OmpThreadsScope scope(threads);
    st = dnnl_sgemm(ta ? 'T' : 'N', tb ? 'T' : 'N', m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
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
