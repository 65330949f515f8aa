// Host memory helpers, f32 <-> bf16/f16 array conversion, and the per-op thread choice.
#include <omp.h>

#include <algorithm>
#include <cstring>

#include "kernels/cpu/cpu_ops.h"
#include "kernels/runtime.h"

namespace gantry::kernels::cpu {

namespace {
constexpr size_t kParallelCopyBytes = size_t{8} << 20;  // below this one thread saturates
}  // namespace

int ThreadsFor(double work, double min_per_thread) {
  if (omp_in_parallel()) return 1;
  int max_threads = NumThreads();
  if (max_threads <= 1 || work < 2.0 * min_per_thread) return 1;
  return static_cast<int>(std::min<double>(max_threads, work / min_per_thread));
}

void FillZero(void* ptr, size_t bytes) {
  int threads = bytes >= kParallelCopyBytes ? ThreadsFor(static_cast<double>(bytes), 4e6) : 1;
  if (threads == 1) {
    std::memset(ptr, 0, bytes);
    return;
  }
#pragma omp parallel num_threads(threads)
  {
    size_t parts = static_cast<size_t>(omp_get_num_threads());
    size_t me = static_cast<size_t>(omp_get_thread_num());
    size_t chunk = (bytes + parts - 1) / parts;
    size_t begin = std::min(bytes, me * chunk);
    size_t end = std::min(bytes, begin + chunk);
    std::memset(static_cast<char*>(ptr) + begin, 0, end - begin);
  }
}

void CopyBytes(void* dst, const void* src, size_t bytes) {
  int threads = bytes >= kParallelCopyBytes ? ThreadsFor(static_cast<double>(bytes), 4e6) : 1;
  if (threads == 1) {
    std::memmove(dst, src, bytes);
    return;
  }
  if (static_cast<char*>(dst) < static_cast<const char*>(src) + bytes &&
      static_cast<const char*>(src) < static_cast<char*>(dst) + bytes) {
    std::memmove(dst, src, bytes);  // overlapping: must stay sequential
    return;
  }
#pragma omp parallel num_threads(threads)
  {
    size_t parts = static_cast<size_t>(omp_get_num_threads());
    size_t me = static_cast<size_t>(omp_get_thread_num());
    size_t chunk = (bytes + parts - 1) / parts;
    size_t begin = std::min(bytes, me * chunk);
    size_t end = std::min(bytes, begin + chunk);
    std::memcpy(static_cast<char*>(dst) + begin, static_cast<const char*>(src) + begin,
                end - begin);
  }
}

Status Cast(const Tensor& src, Tensor& dst) {
  const int64_t n = src.numel();
  const int threads = ThreadsFor(static_cast<double>(n), 1 << 18);
  if (src.dtype() == DType::kF32) {
    const float* in = src.f32();
    uint16_t* out = dst.data<uint16_t>();
    const bool bf16 = dst.dtype() == DType::kBF16;
#pragma omp parallel for num_threads(threads) if (threads > 1) schedule(static)
    for (int64_t i = 0; i < n; ++i) out[i] = bf16 ? FloatToBf16(in[i]) : FloatToHalf(in[i]);
    return OkStatus();
  }
  const uint16_t* in = src.data<uint16_t>();
  float* out = dst.f32();
  const bool bf16 = src.dtype() == DType::kBF16;
#pragma omp parallel for num_threads(threads) if (threads > 1) schedule(static)
  for (int64_t i = 0; i < n; ++i) out[i] = bf16 ? Bf16ToFloat(in[i]) : HalfToFloat(in[i]);
  return OkStatus();
}

}  // namespace gantry::kernels::cpu
