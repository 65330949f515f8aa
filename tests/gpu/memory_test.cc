// CUDA runtime and memory through the public API: allocation is zeroed, copies round-trip in
// every direction, Zero, Cast f32<->bf16/f16 matches the CPU conversion bit for bit, bad
// devices give clear errors, a stale CUDA error does not fail the next op, a copy to the host
// reports a pending bad index. Skips without a GPU.
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <cstring>

#include "kernels/embedding.h"
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

// A runtime call that failed earlier on this thread leaves its error as the thread's last CUDA
// error (so does cudaErrorNotReady from polling an event: NCCL's Work::Wait). The next op
// must not take it for a failure of its own kernel launch.
TEST_F(GpuMemory, AStaleRuntimeErrorDoesNotFailTheNextOp) {
  cudaDeviceProp prop{};
  ASSERT_NE(cudaGetDeviceProperties(&prop, CudaDeviceCount() + 7), cudaSuccess);
  Pair p = RandomPair({4099}, 5);
  GANTRY_ASSERT_OK(Scale(p.cpu, 3.0f));
  GANTRY_ASSERT_OK(Scale(p.gpu, 3.0f));
  ExpectNear(p, 0.0, 0.0, "Scale after a stale error");
  cudaEvent_t event = nullptr;
  ASSERT_EQ(cudaEventCreateWithFlags(&event, cudaEventDisableTiming), cudaSuccess);
  Pair big = RandomPair({1 << 24}, 6);
  for (int i = 0; i < 20; ++i) GANTRY_ASSERT_OK(Scale(big.gpu, 1.0f));
  ASSERT_EQ(cudaEventRecord(event, static_cast<cudaStream_t>(CurrentStream())), cudaSuccess);
  (void)cudaEventQuery(event);  // most likely cudaErrorNotReady
  GANTRY_EXPECT_OK(Scale(p.gpu, 1.0f));
  cudaEventDestroy(event);
}

// A copy to the host synchronises, so it reports a bad index an earlier op found, rather than
// handing back the NaN that op wrote (e.g. the trainer reading a loss).
TEST_F(GpuMemory, CopyToTheHostReportsAPendingBadIndex) {
  BadTokenEmbedding e = EmbedWithBadToken(4, 7);
  Tensor host = Empty({2, 5, 8}, DType::kF32, Device::Cpu());
  Status s = e.status;
  if (s.ok()) s = Copy(e.out, host);
  ASSERT_EQ(s.code(), StatusCode::kInvalidArgument) << s.ToString();
  EXPECT_NE(s.message().find("position 4"), std::string::npos) << s.message();
  GANTRY_EXPECT_OK(Copy(e.out, host));  // reported once
}

}  // namespace
}  // namespace gantry::kernels::gpu_test
