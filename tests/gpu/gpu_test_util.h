// Helpers for the GPU op tests: random host tensors with a cuda:0 twin, copies back, and an
// element-wise comparison that reports the worst element. Every test compares the CUDA backend
// with the CPU backend through the public kernels API and skips when no GPU is usable.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/embedding.h"
#include "kernels/runtime.h"
#include "kernels/tensor.h"

namespace gantry::kernels::gpu_test {

// Throws (gtest reports it and goes on with the next test) when a helper's own call fails.
inline void Check(const Status& s, const char* what) {
  if (!s.ok()) throw std::runtime_error(std::string(what) + ": " + s.ToString());
}
template <typename T>
T Take(StatusOr<T> v, const char* what) {
  Check(v.status(), what);
  return std::move(v).value();
}

#define GANTRY_EXPECT_OK(expr)                       \
  do {                                               \
    const ::gantry::Status s_ = (expr);              \
    EXPECT_TRUE(s_.ok()) << #expr << ": " << s_.ToString(); \
  } while (0)
#define GANTRY_ASSERT_OK(expr)                       \
  do {                                               \
    const ::gantry::Status s_ = (expr);              \
    ASSERT_TRUE(s_.ok()) << #expr << ": " << s_.ToString(); \
  } while (0)

inline Device Gpu() { return Device::Cuda(0); }

inline Tensor Empty(const Shape& shape, DType dtype, Device device) {
  return Take(Tensor::Empty(shape, dtype, device), "Tensor::Empty");
}

inline Tensor ToDevice(const Tensor& t, Device device) {
  Tensor out = Empty(t.shape(), t.dtype(), device);
  Check(Copy(t, out), "Copy");
  return out;
}
inline Tensor ToHost(const Tensor& t) { return ToDevice(t, Device::Cpu()); }

// A host tensor and its copy on cuda:0.
struct Pair {
  Tensor cpu, gpu;
};
inline Pair MakePair(const Tensor& host) { return {host, ToDevice(host, Gpu())}; }

inline Pair RandomPair(const Shape& shape, uint32_t seed, float lo = -1.0f, float hi = 1.0f) {
  Tensor t = Empty(shape, DType::kF32, Device::Cpu());
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  for (int64_t i = 0; i < t.numel(); ++i) t.f32()[i] = dist(rng);
  return MakePair(t);
}
inline Pair ZeroPair(const Shape& shape, DType dtype = DType::kF32) {
  return MakePair(Empty(shape, dtype, Device::Cpu()));
}
// i32 values uniform in [0, bound).
inline Pair IndexPair(const Shape& shape, int32_t bound, uint32_t seed) {
  Tensor t = Empty(shape, DType::kI32, Device::Cpu());
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int32_t> dist(0, bound - 1);
  for (int64_t i = 0; i < t.numel(); ++i) t.i32()[i] = dist(rng);
  return MakePair(t);
}

// EmbeddingForward on the GPU of 2 x 5 tokens over a vocabulary of 7 (8 features) with token
// `position` replaced by `bad`. The device finds the bad index; the op's status is usually
// still OK, and the next synchronising call reports it. The inputs live as long as the result.
struct BadTokenEmbedding {
  Pair tokens, wte;
  Tensor out;
  Status status;
};
inline BadTokenEmbedding EmbedWithBadToken(int64_t position, int32_t bad) {
  BadTokenEmbedding r;
  Pair tok = IndexPair({2, 5}, 7, 7);
  tok.cpu.i32()[position] = bad;
  r.tokens = MakePair(tok.cpu);
  r.wte = RandomPair({7, 8}, 8);
  r.out = Empty({2, 5, 8}, DType::kF32, Gpu());
  r.status = EmbeddingForward(r.tokens.gpu, r.wte.gpu, nullptr, r.out);
  return r;
}

// |gpu - cpu| <= atol + rtol * |cpu| for every element (NaN only where both are NaN).
inline void ExpectNear(const Tensor& cpu, const Tensor& gpu, double rtol, double atol,
                       const std::string& what) {
  ASSERT_EQ(cpu.numel(), gpu.numel()) << what;
  ASSERT_EQ(cpu.dtype(), gpu.dtype()) << what;
  Tensor g = ToHost(gpu);
  int64_t bad = 0, worst = -1;
  double worst_excess = 0.0;
  for (int64_t i = 0; i < cpu.numel(); ++i) {
    double a, b;
    if (cpu.dtype() == DType::kI32) {
      a = cpu.i32()[i];
      b = g.i32()[i];
    } else {
      a = cpu.f32()[i];
      b = g.f32()[i];
    }
    if (std::isnan(a) && std::isnan(b)) continue;
    const double excess = std::fabs(a - b) - (atol + rtol * std::fabs(a));
    if (!(excess <= 0.0)) {
      ++bad;
      if (worst < 0 || excess > worst_excess || std::isnan(excess)) {
        worst = i;
        worst_excess = excess;
      }
    }
  }
  if (bad > 0) {
    const double a = cpu.dtype() == DType::kI32 ? cpu.i32()[worst] : cpu.f32()[worst];
    const double b = cpu.dtype() == DType::kI32 ? g.i32()[worst] : g.f32()[worst];
    ADD_FAILURE() << what << ": " << bad << " of " << cpu.numel()
                  << " elements differ; worst at " << worst << ": cpu " << a << " gpu " << b
                  << " (rtol " << rtol << ", atol " << atol << ")";
  }
}
inline void ExpectNear(const Pair& p, double rtol, double atol, const std::string& what) {
  ExpectNear(p.cpu, p.gpu, rtol, atol, what);
}

inline constexpr double kRtol = 1e-4, kAtol = 1e-5;

// Fixture: skips every test when there is no usable GPU.
class GpuTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (CudaDeviceCount() == 0) {
      GTEST_SKIP() << "no CUDA device (built with CUDA: " << (BuiltWithCuda() ? "yes" : "no")
                   << ")";
    }
  }
  void TearDown() override {
    if (CudaDeviceCount() > 0) GANTRY_EXPECT_OK(Synchronize(Gpu()));
  }
};

}  // namespace gantry::kernels::gpu_test
