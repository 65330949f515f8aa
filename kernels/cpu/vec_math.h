// Branch-free float math that GCC auto-vectorises (no libm calls in hot loops): exp, tanh,
// sigmoid. Accuracy: FastExp within ~2 ulp on [-87.3, 87.3];
// FastTanh/FastSigmoid within ~1e-7 absolute. Internal to kernels/cpu.
#pragma once

#include <bit>
#include <cstdint>

// Hot loops that gain from AVX-512 where the CPU has it while the build targets x86-64-v3:
// GCC compiles the function twice and picks the clone at load time (ifunc). The choice
// depends on the CPU only, so results stay the same for every thread count.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define GANTRY_AVX512_CLONES __attribute__((target_clones("arch=x86-64-v4", "default")))
#else
#define GANTRY_AVX512_CLONES
#endif

namespace gantry::kernels::cpu {

// exp(x), Cephes-style: x = n ln2 + r, |r| <= ln2/2, degree-6 polynomial, scale by 2^n.
// |x| is clamped to 87.33 (results stay normal floats: exp(-100) gives ~1.2e-38, exp(100)
// ~8.5e37); NaN stays NaN. The clamp is done on the integer bits on purpose: a float select
// lets GCC's jump threading split the caller's loop per clamp case, and the speculated
// lanes (e.g. v / exp(87)) then produce denormals that cost ~100 cycles each.
// The constants are shared with the 16-lane version (attention_rows.cc).
constexpr float kExpLimit = 87.33f;
constexpr float kExpMagic = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
constexpr float kExpLog2e = 1.44269504088896341f;
constexpr float kExpLn2Hi = 0.693359375f, kExpLn2Lo = 2.12194440e-4f;  // r = x - n hi + n lo
constexpr float kExpPoly[6] = {1.9875691500e-4f, 1.3981999507e-3f, 8.3334519073e-3f,
                               4.1665795894e-2f, 1.6666665459e-1f, 5.0000001201e-1f};
inline float FastExp(float x) {
  const uint32_t bits = std::bit_cast<uint32_t>(x);
  const uint32_t mag = bits & 0x7fffffffu;
  constexpr uint32_t kLimit = std::bit_cast<uint32_t>(kExpLimit);
  const uint32_t clamped = mag > 0x7f800000u ? mag : (mag < kLimit ? mag : kLimit);
  x = std::bit_cast<float>((bits & 0x80000000u) | clamped);
  float n = (x * kExpLog2e + kExpMagic) - kExpMagic;
  float r = x - n * kExpLn2Hi;
  r = r + n * kExpLn2Lo;
  float r2 = r * r;
  float p = kExpPoly[0];
  for (int k = 1; k < 6; ++k) p = p * r + kExpPoly[k];
  p = p * r2 + r + 1.0f;
  const int32_t scale = (static_cast<int32_t>(n) + 127) << 23;
  return p * std::bit_cast<float>(scale);
}

// tanh(u): 1 - 2 / (exp(2u) + 1), with an odd Taylor series near 0 to keep relative accuracy.
inline float FastTanh(float u) {
  float e = FastExp(2.0f * u);
  float big = 1.0f - 2.0f / (e + 1.0f);
  float u2 = u * u;
  float small = u * (1.0f + u2 * (-0.333333333f + u2 * (0.133333333f - u2 * 0.053968254f)));
  float a = u < 0.0f ? -u : u;
  return a < 0.0625f ? small : big;
}

inline float FastSigmoid(float x) { return 1.0f / (1.0f + FastExp(-x)); }

// GELU, tanh approximation (torch approximate="tanh").
constexpr float kGeluK0 = 0.7978845608028654f;  // sqrt(2 / pi)
constexpr float kGeluK1 = 0.044715f;

}  // namespace gantry::kernels::cpu
