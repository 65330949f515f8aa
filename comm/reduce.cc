// Reduction kernels: one templated loop per (dtype, op), cloned for AVX-512/AVX2/baseline.
// f16 uses F16C conversions when the CPU has them (every x86 CPU since 2012).
#include "comm/reduce.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#if defined(__x86_64__)
#include <immintrin.h>
#define GANTRY_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define GANTRY_CLONES
#endif
#define GANTRY_INLINE inline __attribute__((always_inline))

namespace gantry::comm {
namespace {

template <ReduceOp kOp, typename T>
GANTRY_INLINE T Apply(T a, T b) {
  if constexpr (kOp == ReduceOp::kMax) return a > b ? a : b;
  else if constexpr (kOp == ReduceOp::kMin) return a < b ? a : b;
  else return a + b;  // kSum, kAvg
}

template <ReduceOp kOp, typename T>
GANTRY_INLINE void Loop(T* __restrict d, const T* a, const T* b, size_t n) {
  for (size_t i = 0; i < n; ++i) d[i] = Apply<kOp>(a[i], b[i]);
}

GANTRY_INLINE float Bf16ToF(uint16_t h) {
  uint32_t u = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

GANTRY_INLINE uint16_t FToBf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  uint32_t rounded = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
  bool nan = (u & 0x7FFFFFFFu) > 0x7F800000u;
  return static_cast<uint16_t>(nan ? ((u >> 16) | 0x40u) : rounded);
}

template <ReduceOp kOp>
GANTRY_INLINE void LoopBf16(uint16_t* d, const uint16_t* a, const uint16_t* b, size_t n) {
  for (size_t i = 0; i < n; ++i) d[i] = FToBf16(Apply<kOp>(Bf16ToF(a[i]), Bf16ToF(b[i])));
}

// Clones: the hot loops, one per element type; `op` is dispatched outside the loop.
GANTRY_CLONES void ReduceF32(float* d, const float* a, const float* b, size_t n, ReduceOp op) {
  switch (op) {
    case ReduceOp::kMax: Loop<ReduceOp::kMax>(d, a, b, n); break;
    case ReduceOp::kMin: Loop<ReduceOp::kMin>(d, a, b, n); break;
    default: Loop<ReduceOp::kSum>(d, a, b, n); break;
  }
}

GANTRY_CLONES void ReduceI32(int32_t* d, const int32_t* a, const int32_t* b, size_t n,
                             ReduceOp op) {
  switch (op) {
    case ReduceOp::kMax: Loop<ReduceOp::kMax>(d, a, b, n); break;
    case ReduceOp::kMin: Loop<ReduceOp::kMin>(d, a, b, n); break;
    default: Loop<ReduceOp::kSum>(d, a, b, n); break;
  }
}

GANTRY_CLONES void ReduceBf16(uint16_t* d, const uint16_t* a, const uint16_t* b, size_t n,
                              ReduceOp op) {
  switch (op) {
    case ReduceOp::kMax: LoopBf16<ReduceOp::kMax>(d, a, b, n); break;
    case ReduceOp::kMin: LoopBf16<ReduceOp::kMin>(d, a, b, n); break;
    default: LoopBf16<ReduceOp::kSum>(d, a, b, n); break;
  }
}

float F16ToFloatSoft(uint16_t h) {
  uint32_t sign = (h & 0x8000u) << 16, exp = (h >> 10) & 0x1Fu, man = h & 0x3FFu, u;
  if (exp == 0x1F) {
    u = sign | 0x7F800000u | (man << 13);
  } else if (exp != 0) {
    u = sign | ((exp + 112) << 23) | (man << 13);
  } else if (man == 0) {
    u = sign;
  } else {  // subnormal: normalise
    int e = -1;
    do { man <<= 1; ++e; } while ((man & 0x400u) == 0);
    u = sign | (static_cast<uint32_t>(112 - e) << 23) | ((man & 0x3FFu) << 13);
  }
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

uint16_t FloatToF16Soft(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  uint32_t sign = (u >> 16) & 0x8000u, abs = u & 0x7FFFFFFFu;
  if (abs > 0x7F800000u) return static_cast<uint16_t>(sign | 0x7E00u);  // NaN
  if (abs >= 0x477FF000u) return static_cast<uint16_t>(sign | 0x7C00u);  // overflow -> inf
  if (abs < 0x38800000u) {  // subnormal or zero in f16: let the FPU round (x * 2^24)
    float scaled;
    std::memcpy(&scaled, &abs, 4);
    return static_cast<uint16_t>(sign | static_cast<uint32_t>(std::nearbyint(scaled * 16777216.0f)));
  }
  uint32_t rounded = abs + 0xFFFu + ((abs >> 13) & 1u) - (112u << 23);
  return static_cast<uint16_t>(sign | (rounded >> 13));
}

#if defined(__x86_64__)
__attribute__((target("avx2,f16c"))) void ReduceF16Hw(uint16_t* d, const uint16_t* a,
                                                      const uint16_t* b, size_t n, ReduceOp op) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256 x = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(a + i)));
    __m256 y = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b + i)));
    __m256 r = op == ReduceOp::kMax   ? _mm256_max_ps(x, y)
               : op == ReduceOp::kMin ? _mm256_min_ps(x, y)
                                      : _mm256_add_ps(x, y);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(d + i),
                     _mm256_cvtps_ph(r, _MM_FROUND_TO_NEAREST_INT));
  }
  for (; i < n; ++i) {
    __m128 x = _mm_cvtph_ps(_mm_cvtsi32_si128(a[i])), y = _mm_cvtph_ps(_mm_cvtsi32_si128(b[i]));
    __m128 r = op == ReduceOp::kMax ? _mm_max_ss(x, y)
               : op == ReduceOp::kMin ? _mm_min_ss(x, y) : _mm_add_ss(x, y);
    d[i] = static_cast<uint16_t>(_mm_cvtsi128_si32(_mm_cvtps_ph(r, _MM_FROUND_TO_NEAREST_INT)));
  }
}
bool HaveF16c() {
  static const bool kHave = __builtin_cpu_supports("f16c") && __builtin_cpu_supports("avx2");
  return kHave;
}
#endif

void ReduceF16(uint16_t* d, const uint16_t* a, const uint16_t* b, size_t n, ReduceOp op) {
#if defined(__x86_64__)
  if (HaveF16c()) return ReduceF16Hw(d, a, b, n, op);
#endif
  for (size_t i = 0; i < n; ++i) {
    float x = F16ToFloatSoft(a[i]), y = F16ToFloatSoft(b[i]);
    float r = op == ReduceOp::kMax ? std::max(x, y) : op == ReduceOp::kMin ? std::min(x, y) : x + y;
    d[i] = FloatToF16Soft(r);
  }
}

}  // namespace

void ReduceInto(void* dst, const void* a, const void* b, size_t count, DataType dtype,
                ReduceOp op) {
  switch (dtype) {
    case DataType::kF32:
      ReduceF32(static_cast<float*>(dst), static_cast<const float*>(a),
                static_cast<const float*>(b), count, op);
      break;
    case DataType::kI32:
      ReduceI32(static_cast<int32_t*>(dst), static_cast<const int32_t*>(a),
                static_cast<const int32_t*>(b), count, op);
      break;
    case DataType::kBF16:
      ReduceBf16(static_cast<uint16_t*>(dst), static_cast<const uint16_t*>(a),
                 static_cast<const uint16_t*>(b), count, op);
      break;
    case DataType::kF16:
      ReduceF16(static_cast<uint16_t*>(dst), static_cast<const uint16_t*>(a),
                static_cast<const uint16_t*>(b), count, op);
      break;
  }
}

void FinishAverage(void* data, size_t count, DataType dtype, int world) {
  if (world <= 1) return;
  const float inv = 1.0f / static_cast<float>(world);
  switch (dtype) {
    case DataType::kF32: {
      float* p = static_cast<float*>(data);
      for (size_t i = 0; i < count; ++i) p[i] *= inv;
      break;
    }
    case DataType::kI32: {
      int32_t* p = static_cast<int32_t*>(data);
      for (size_t i = 0; i < count; ++i) p[i] /= world;
      break;
    }
    case DataType::kBF16: {
      uint16_t* p = static_cast<uint16_t*>(data);
      for (size_t i = 0; i < count; ++i) p[i] = FToBf16(Bf16ToF(p[i]) * inv);
      break;
    }
    case DataType::kF16: {
      uint16_t* p = static_cast<uint16_t*>(data);
      for (size_t i = 0; i < count; ++i) p[i] = FloatToF16(F16ToFloat(p[i]) * inv);
      break;
    }
  }
}

float BF16ToFloat(uint16_t bits) { return Bf16ToF(bits); }
uint16_t FloatToBF16(float value) { return FToBf16(value); }
float F16ToFloat(uint16_t bits) { return F16ToFloatSoft(bits); }
uint16_t FloatToF16(float value) { return FloatToF16Soft(value); }

}  // namespace gantry::comm
