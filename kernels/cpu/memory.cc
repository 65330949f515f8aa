// Host memory helpers, f32 <-> bf16/f16 array conversion, and the per-op thread choice.
#include <algorithm>
#include <cstring>

#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/parallel.h"
#include "kernels/runtime.h"
// VCVTNEPS2BF16 intrinsics: GCC 10+, clang 9+.
#if defined(__x86_64__) && \
    ((defined(__clang__) && __clang_major__ >= 9) || (!defined(__clang__) && __GNUC__ >= 10))
#define GANTRY_AVX512BF16_INTRINSICS 1
#include <immintrin.h>
#else
#define GANTRY_AVX512BF16_INTRINSICS 0
#endif

namespace gantry::kernels::cpu {

namespace {
constexpr size_t kParallelCopyBytes = size_t{8} << 20;  // below this one thread saturates
}  // namespace

#if GANTRY_AVX512BF16_INTRINSICS
__attribute__((target("avx512f,avx512bf16"))) static void FloatsToBf16Avx512(const float* src,
                                                                            int64_t n,
                                                                            uint16_t* dst) {
  int64_t j = 0;
  for (; j + 16 <= n; j += 16) {
    const __m256bh v = _mm512_cvtneps_pbh(_mm512_loadu_ps(src + j));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + j), reinterpret_cast<const __m256i&>(v));
  }
  for (; j < n; ++j) dst[j] = FloatToBf16(src[j]);
}
#endif

void FloatsToBf16(const float* src, int64_t n, uint16_t* dst) {
#if GANTRY_AVX512BF16_INTRINSICS
  static const bool fast = __builtin_cpu_supports("avx512bf16");
  if (fast) return FloatsToBf16Avx512(src, n, dst);
#endif
  for (int64_t j = 0; j < n; ++j) dst[j] = FloatToBf16(src[j]);
}

int ThreadsFor(double work, double min_per_thread) {
  if (InParallelRegion()) return 1;
  int max_threads = NumThreads();
  if (max_threads <= 1 || work < 2.0 * min_per_thread) return 1;
  return static_cast<int>(std::min<double>(max_threads, work / min_per_thread));
}

void FillZero(void* ptr, size_t bytes) {
  int threads = bytes >= kParallelCopyBytes ? ThreadsFor(static_cast<double>(bytes), 4e6) : 1;
  char* p = static_cast<char*>(ptr);
  ParallelFor(static_cast<int64_t>(bytes), threads, [=](int64_t begin, int64_t end) {
    std::memset(p + begin, 0, static_cast<size_t>(end - begin));
  });
}

void CopyBytes(void* dst, const void* src, size_t bytes) {
  int threads = bytes >= kParallelCopyBytes ? ThreadsFor(static_cast<double>(bytes), 4e6) : 1;
  char* d = static_cast<char*>(dst);
  const char* s = static_cast<const char*>(src);
  if (threads == 1 || (d < s + bytes && s < d + bytes)) {
    std::memmove(dst, src, bytes);  // small, or overlapping: must stay sequential
    return;
  }
  ParallelFor(static_cast<int64_t>(bytes), threads, [=](int64_t begin, int64_t end) {
    std::memcpy(d + begin, s + begin, static_cast<size_t>(end - begin));
  });
}

Status Cast(const Tensor& src, Tensor& dst) {
  const int64_t n = src.numel();
  const int threads = ThreadsFor(static_cast<double>(n), 1 << 18);
  if (src.dtype() == DType::kF32) {
    const float* in = src.f32();
    uint16_t* out = dst.data<uint16_t>();
    const bool bf16 = dst.dtype() == DType::kBF16;
    ParallelFor(n, threads, [=](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) out[i] = bf16 ? FloatToBf16(in[i]) : FloatToHalf(in[i]);
    });
    return OkStatus();
  }
  const uint16_t* in = src.data<uint16_t>();
  float* out = dst.f32();
  const bool bf16 = src.dtype() == DType::kBF16;
  ParallelFor(n, threads, [=](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) out[i] = bf16 ? Bf16ToFloat(in[i]) : HalfToFloat(in[i]);
  });
  return OkStatus();
}

}  // namespace gantry::kernels::cpu
