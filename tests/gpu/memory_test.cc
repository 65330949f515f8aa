// CUDA runtime and memory through the public API: allocation is zeroed, copies round-trip in
// every direction, Zero, Cast f32<->bf16/f16 matches the CPU conversion bit for bit, bad
// devices give clear errors. Skips without a GPU.
#include <gtest/gtest.h>

#include <cstring>

#include "kernels/linear.h"
#include "kernels/runtime.h"
#include "kernels/tensor.h"
#include "tests/gpu/gpu_test_util.h"

namespace gantry::kernels::gpu_test {
namespace {

TEST(GpuRuntime, DeviceCountNeverAborts) {
  // Without a GPU or driver this must be 0 rather than a crash.
  const int n = CudaDeviceCount();
  EXPECT_GE(n, 0);
  if (!BuiltWithCuda()) EXPECT_EQ(n, 0);
}

using GpuMemory = GpuTest;

TEST_F(GpuMemory, EmptyIsZeroed) {
  Tensor t = Empty({1000, 37}, DType::kF32, Gpu());
  Tensor h = ToHost(t);
  for (int64_t i = 0; i < h.numel(); ++i) ASSERT_EQ(h.f32()[i], 0.0f) << i;
}

TEST_F(GpuMemory, CopyRoundTripsHostDeviceDevice) {
  Pair p = RandomPair({257, 33}, 1);
  Tensor d2 = Empty(p.cpu.shape(), DType::kF32, Gpu());
  GANTRY_ASSERT_OK(Copy(p.gpu, d2));
  Tensor back = ToHost(d2);
  EXPECT_EQ(std::memcmp(back.raw(), p.cpu.raw(), p.cpu.nbytes()), 0);
}

TEST_F(GpuMemory, ZeroClearsDeviceTensor) {
  Pair p = RandomPair({4096}, 2);
  GANTRY_ASSERT_OK(Zero(p.gpu));
  Tensor h = ToHost(p.gpu);
  for (int64_t i = 0; i < h.numel(); ++i) ASSERT_EQ(h.f32()[i], 0.0f) << i;
}

TEST_F(GpuMemory, CastMatchesCpuBitForBit) {
  Pair p = RandomPair({3001}, 3, -100.0f, 100.0f);
  for (DType half : {DType::kBF16, DType::kF16}) {
    Tensor cpu_half = Empty(p.cpu.shape(), half, Device::Cpu());
    Tensor gpu_half = Empty(p.cpu.shape(), half, Gpu());
    GANTRY_ASSERT_OK(Cast(p.cpu, cpu_half));
    GANTRY_ASSERT_OK(Cast(p.gpu, gpu_half));
    Tensor got = ToHost(gpu_half);
    EXPECT_EQ(std::memcmp(got.raw(), cpu_half.raw(), cpu_half.nbytes()), 0) << DTypeName(half);
    // And back to f32 on the device.
    Tensor gpu_f32 = Empty(p.cpu.shape(), DType::kF32, Gpu());
    Tensor cpu_f32 = Empty(p.cpu.shape(), DType::kF32, Device::Cpu());
    GANTRY_ASSERT_OK(Cast(gpu_half, gpu_f32));
    GANTRY_ASSERT_OK(Cast(cpu_half, cpu_f32));
    ExpectNear(cpu_f32, gpu_f32, 0.0, 0.0, std::string("cast back from ") + DTypeName(half));
    // The rounding really happened (bf16 keeps 8 bits of mantissa).
    if (half == DType::kBF16) {
      Tensor h = ToHost(gpu_f32);
      int64_t changed = 0;
      for (int64_t i = 0; i < h.numel(); ++i) changed += h.f32()[i] != p.cpu.f32()[i];
      EXPECT_GT(changed, h.numel() / 2);
    }
  }
}

TEST_F(GpuMemory, MissingDeviceIsAClearError) {
  StatusOr<Tensor> t = Tensor::Empty({4}, DType::kF32, Device::Cuda(CudaDeviceCount() + 3));
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.status().message().find("cuda:"), std::string::npos) << t.status().ToString();
}

TEST_F(GpuMemory, SynchronizeSucceedsAfterWork) {
  Pair p = RandomPair({1 << 20}, 4);
  GANTRY_ASSERT_OK(Scale(p.gpu, 2.0f));
  GANTRY_EXPECT_OK(Synchronize(Gpu()));
}

}  // namespace
}  // namespace gantry::kernels::gpu_test
