// Deterministic random numbers for training: identical streams on every machine for a seed
// (no std:: distributions, whose output is implementation-defined). Rng is xoshiro256** with
// a serialisable state (checkpoints carry it); MixSeed derives independent seeds from tuples
// such as (seed, epoch, rank) so data order and init never depend on call order elsewhere.
#pragma once

#include <array>
#include <cmath>
#include <cstdint>

namespace gantry::train {

// SplitMix64 finaliser applied to a ^ (b * golden ratio): a well-mixed 64-bit hash of (a, b).
inline uint64_t MixSeed(uint64_t a, uint64_t b) {
  uint64_t z = a ^ (b * 0x9E3779B97F4A7C15ull + 0x632BE59BD9B4E019ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

class Rng {
 public:
  using State = std::array<uint64_t, 4>;

  explicit Rng(uint64_t seed = 0) { Seed(seed); }
  void Seed(uint64_t seed) {
    for (int i = 0; i < 4; ++i) s_[i] = MixSeed(seed, uint64_t(i) + 1);
  }
  const State& state() const { return s_; }
  void set_state(const State& s) { s_ = s; }

  uint64_t NextU64() {
    const uint64_t result = Rotl(s_[1] * 5, 7) * 9;
    const uint64_t t = s_[1] << 17;
    s_[2] ^= s_[0];
    s_[3] ^= s_[1];
    s_[1] ^= s_[2];
    s_[0] ^= s_[3];
    s_[2] ^= t;
    s_[3] = Rotl(s_[3], 45);
    return result;
  }
  // Uniform in [0, n) (n > 0), without modulo bias worth caring about (Lemire's method).
  uint64_t Below(uint64_t n) {
    return static_cast<uint64_t>((static_cast<unsigned __int128>(NextU64()) * n) >> 64);
  }
  // Uniform in [0, 1) with 24 random bits (exactly representable in float).
  float Uniform() { return float(NextU64() >> 40) * (1.0f / 16777216.0f); }
  // Standard normal (Box-Muller in double, one value per call).
  float Normal() {
    const double u1 = (double(NextU64() >> 11) + 1.0) * (1.0 / 9007199254740992.0);
    const double u2 = double(NextU64() >> 11) * (1.0 / 9007199254740992.0);
    return float(std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2));
  }

 private:
  static uint64_t Rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  State s_{};
};

}  // namespace gantry::train
