// Tensor/Buffer basics, views, Copy/Zero/Cast, bf16/f16 conversions, parsing, runtime.
#include "kernels/tensor.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <limits>
#include <string>

#include "kernels/runtime.h"
#include "tests/unit/kernels/test_util.h"

namespace gantry::kernels {
namespace {

using testing::MustEmpty;
using testing::Random;

TEST(TensorTest, EmptyIsZeroedAlignedAndSized) {
  Tensor t = MustEmpty({3, 5});
  EXPECT_EQ(t.numel(), 15);
  EXPECT_EQ(t.nbytes(), 60u);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(t.raw()) % 64, 0u);
  for (int64_t i = 0; i < t.numel(); ++i) EXPECT_EQ(t.f32()[i], 0.0f);
  EXPECT_EQ(t.ToString(), "f32[3, 5]@cpu");
  EXPECT_EQ(t.dim(-1), 5);
  EXPECT_TRUE(t.defined());
  EXPECT_FALSE(Tensor().defined());
}

// The VmFlags line of the /proc/self/smaps mapping holding addr ("" when not found).
std::string VmFlagsOf(const void* addr) {
  std::ifstream smaps("/proc/self/smaps");
  const uintptr_t a = reinterpret_cast<uintptr_t>(addr);
  std::string line;
  bool inside = false;
  while (std::getline(smaps, line)) {
    unsigned long lo = 0, hi = 0;
    if (std::sscanf(line.c_str(), "%lx-%lx ", &lo, &hi) == 2 && line.find('-') < 17) {
      inside = a >= lo && a < hi;
    } else if (inside && line.rfind("VmFlags:", 0) == 0) {
      return line;
    }
  }
  return "";
}

TEST(TensorTest, BigHostBuffersAskForHugePages) {
  Tensor big = MustEmpty({1024, 1024});  // 4 MiB
  EXPECT_EQ(reinterpret_cast<uintptr_t>(big.raw()) % (2u << 20), 0u);
  for (int64_t i = 0; i < big.numel(); i += 4099) ASSERT_EQ(big.f32()[i], 0.0f);
  std::string mode;
  std::getline(std::ifstream("/sys/kernel/mm/transparent_hugepage/enabled"), mode);
  if (mode.empty() || mode.find("[never]") != std::string::npos) {
    GTEST_SKIP() << "this kernel has transparent huge pages off: '" << mode << "'";
  }
  const std::string flags = VmFlagsOf(big.raw());
  ASSERT_FALSE(flags.empty()) << "no /proc/self/smaps entry for the buffer";
  // "hg": the range carries MADV_HUGEPAGE (whether the kernel backs it with huge pages then
  // depends on its THP mode and free memory, not on us).
  EXPECT_NE(flags.find(" hg"), std::string::npos) << flags;
  Tensor small = MustEmpty({64, 64});  // 16 KiB: plain allocation
  EXPECT_EQ(reinterpret_cast<uintptr_t>(small.raw()) % 64, 0u);
}

TEST(TensorTest, EmptyRejectsNegativeDims) {
  auto t = Tensor::Empty({2, -1});
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.status().message().find("[2, -1]"), std::string::npos);
}

TEST(TensorTest, ViewsShareMemory) {
  Tensor t = Random({4, 3}, 1);
  Tensor r = t.Reshape({2, 6});
  EXPECT_EQ(r.raw(), t.raw());
  Tensor s = t.Slice(1, 3);
  EXPECT_EQ(s.shape(), (Shape{2, 3}));
  EXPECT_EQ(s.f32(), t.f32() + 3);
  Tensor v = t.View(5, {7});
  EXPECT_EQ(v.f32(), t.f32() + 5);
  v.f32()[0] = 42.0f;
  EXPECT_EQ(t.f32()[5], 42.0f);
}

TEST(TensorTest, BadViewsAreRejectedByOps) {
  Tensor t = MustEmpty({4, 3});
  Tensor bad_reshape = t.Reshape({5, 3});
  Tensor bad_slice = t.Slice(2, 9);
  Tensor bad_view = t.View(10, {3});
  for (Tensor* bad : {&bad_reshape, &bad_slice, &bad_view}) {
    Status st = Zero(*bad);
    ASSERT_FALSE(st.ok());
    EXPECT_NE(st.message().find("invalid"), std::string::npos) << st.message();
  }
}

TEST(TensorTest, CopyZeroAndErrors) {
  Tensor a = Random({10}, 2);
  Tensor b = MustEmpty({2, 5});
  ASSERT_OK(Copy(a, b));
  EXPECT_EQ(std::memcmp(a.raw(), b.raw(), a.nbytes()), 0);
  ASSERT_OK(Zero(b));
  for (int64_t i = 0; i < 10; ++i) EXPECT_EQ(b.f32()[i], 0.0f);
  Tensor c = MustEmpty({11});
  Status st = Copy(a, c);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("f32[11]"), std::string::npos) << st.message();
}

TEST(TensorTest, LargeCopyMatches) {  // exercises the multi-threaded path (>= 8 MiB)
  Tensor a = Random({3 << 20}, 3);
  Tensor b = MustEmpty({3 << 20});
  ASSERT_OK(Copy(a, b));
  EXPECT_EQ(std::memcmp(a.raw(), b.raw(), a.nbytes()), 0);
}

TEST(TensorTest, Bf16RoundTripAndRounding) {
  EXPECT_EQ(FloatToBf16(1.0f), 0x3f80);
  EXPECT_EQ(Bf16ToFloat(0x3f80), 1.0f);
  // 1 + 2^-8 is exactly halfway between bf16 1.0 and 1.0078125: ties to even (1.0).
  EXPECT_EQ(Bf16ToFloat(FloatToBf16(1.00390625f)), 1.0f);
  // 1 + 3 * 2^-8 is halfway between 1.0078125 (odd) and 1.015625 (even): rounds up.
  EXPECT_EQ(Bf16ToFloat(FloatToBf16(1.01171875f)), 1.015625f);
  EXPECT_TRUE(std::isnan(Bf16ToFloat(FloatToBf16(std::numeric_limits<float>::quiet_NaN()))));
  EXPECT_TRUE(std::isinf(Bf16ToFloat(FloatToBf16(std::numeric_limits<float>::infinity()))));
  for (float f : {0.5f, -3.25f, 1e-20f, 65504.0f, -1e30f}) {
    const float back = Bf16ToFloat(FloatToBf16(f));
    EXPECT_LE(std::abs(back - f), std::abs(f) * (1.0f / 256.0f)) << f;
  }
}

TEST(TensorTest, HalfRoundTripAndEdgeCases) {
  EXPECT_EQ(FloatToHalf(1.0f), 0x3c00);
  EXPECT_EQ(FloatToHalf(-2.0f), 0xc000);
  EXPECT_EQ(FloatToHalf(65504.0f), 0x7bff);
  EXPECT_EQ(FloatToHalf(65520.0f), 0x7c00);  // halfway to 2^16 rounds to even: inf
  EXPECT_EQ(FloatToHalf(1e-8f), 0x0000);     // below half the smallest subnormal
  EXPECT_EQ(HalfToFloat(0x0001), 5.9604644775390625e-8f);
  EXPECT_EQ(FloatToHalf(5.9604644775390625e-8f), 0x0001);
  EXPECT_EQ(HalfToFloat(0x3555), 0.333251953125f);
  EXPECT_EQ(FloatToHalf(1.0f + 1.0f / 2048.0f), 0x3c00);  // tie -> even
  EXPECT_TRUE(std::isnan(HalfToFloat(FloatToHalf(std::numeric_limits<float>::quiet_NaN()))));
  // Every finite half survives half -> float -> half.
  for (uint32_t h = 0; h < 0x10000; ++h) {
    if ((h & 0x7c00) == 0x7c00) continue;
    ASSERT_EQ(FloatToHalf(HalfToFloat(static_cast<uint16_t>(h))), h) << std::hex << h;
  }
}

TEST(TensorTest, CastArrays) {
  Tensor a = Random({1000}, 4, -100.0f, 100.0f);
  for (DType dt : {DType::kBF16, DType::kF16}) {
    Tensor h = MustEmpty({1000}, dt);
    Tensor back = MustEmpty({10, 100});
    ASSERT_OK(Cast(a, h));
    ASSERT_OK(Cast(h, back));
    for (int64_t i = 0; i < 1000; ++i) {
      const uint16_t bits = h.data<uint16_t>()[i];
      EXPECT_EQ(bits, dt == DType::kBF16 ? FloatToBf16(a.f32()[i]) : FloatToHalf(a.f32()[i]));
      EXPECT_NEAR(back.f32()[i], a.f32()[i], std::abs(a.f32()[i]) / 128.0f);
    }
  }
  Tensor i32 = MustEmpty({1000}, DType::kI32);
  EXPECT_EQ(Cast(a, i32).code(), StatusCode::kInvalidArgument);
}

TEST(TensorTest, ParseAndNames) {
  EXPECT_EQ(*ParseDType("bf16"), DType::kBF16);
  EXPECT_FALSE(ParseDType("f64").ok());
  EXPECT_EQ(*ParseDevice("cuda:3"), Device::Cuda(3));
  EXPECT_EQ(ParseDevice("cpu")->ToString(), "cpu");
  EXPECT_FALSE(ParseDevice("cuda:x").ok());
  EXPECT_FALSE(ParseDevice("tpu").ok());
  EXPECT_EQ(ShapeToString({2, 3}), "[2, 3]");
}

TEST(TensorTest, ChecksNameOpAndTensor) {
  Tensor t = MustEmpty({2, 3});
  Status st = CheckShape("MyOp", "weights", t, {3, 2});
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("MyOp"), std::string::npos);
  EXPECT_NE(st.message().find("weights"), std::string::npos);
  EXPECT_NE(st.message().find("[2, 3]"), std::string::npos);
  EXPECT_FALSE(CheckDType("MyOp", "t", t, DType::kI32).ok());
  Tensor d = Tensor::Wrap(nullptr, {4}, DType::kF32, Device::Cuda(0));
  EXPECT_FALSE(CheckSameDevice("MyOp", {&t, &d}).ok());
  EXPECT_TRUE(CheckSameDevice("MyOp", {&t, nullptr, &t}).ok());
}

TEST(RuntimeTest, ThreadsAndCuda) {
  const int before = NumThreads();
  EXPECT_GE(before, 1);
  SetNumThreads(1);
  EXPECT_EQ(NumThreads(), 1);
  SetNumThreads(before);
  EXPECT_EQ(NumThreads(), before);
  EXPECT_TRUE(Synchronize(Device::Cpu()).ok());
  if (!BuiltWithCuda()) EXPECT_EQ(CudaDeviceCount(), 0);
  if (CudaDeviceCount() == 0) {  // no backend or no GPU: device memory is a clear error
    auto t = Tensor::Empty({4}, DType::kF32, Device::Cuda(0));
    ASSERT_FALSE(t.ok());
    EXPECT_FALSE(t.status().message().empty());
    Tensor host = MustEmpty({4});
    Tensor dev = Tensor::Wrap(reinterpret_cast<void*>(0x1000), {4}, DType::kF32, Device::Cuda(0));
    EXPECT_FALSE(Copy(host, dev).ok());
  }
  SetCurrentStream(reinterpret_cast<void*>(0x10));
  EXPECT_EQ(CurrentStream(), reinterpret_cast<void*>(0x10));
  SetCurrentStream(nullptr);
}

}  // namespace
}  // namespace gantry::kernels
