// comm/reduce.h: every dtype x op against a scalar double reference, odd lengths (the
// vector clones' tails), aliasing, and the bf16/f16 conversions' rounding and special values.
#include "comm/reduce.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

namespace gantry::comm {
namespace {

double Load(DataType d, const std::vector<uint32_t>& v, size_t i) {
  switch (d) {
    case DataType::kF32: { float f; std::memcpy(&f, &v[i], 4); return f; }
    case DataType::kI32: return static_cast<int32_t>(v[i]);
    case DataType::kBF16: return BF16ToFloat(static_cast<uint16_t>(v[i]));
    case DataType::kF16: return F16ToFloat(static_cast<uint16_t>(v[i]));
  }
  return 0;
}

TEST(Reduce, EveryDtypeAndOpMatchesScalarReference) {
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> u(-100, 100);
  for (DataType d : {DataType::kF32, DataType::kBF16, DataType::kF16, DataType::kI32}) {
    for (ReduceOp op : {ReduceOp::kSum, ReduceOp::kAvg, ReduceOp::kMax, ReduceOp::kMin}) {
      for (size_t n : {1, 7, 15, 16, 17, 63, 1001}) {
        const size_t es = DataTypeSize(d);
        std::vector<char> a(n * es), b(n * es), out(n * es);
        for (size_t i = 0; i < n; ++i) {
          float x = u(rng), y = u(rng);
          if (d == DataType::kF32) { std::memcpy(&a[i * 4], &x, 4); std::memcpy(&b[i * 4], &y, 4); }
          if (d == DataType::kI32) { int32_t p = x, q = y; std::memcpy(&a[i * 4], &p, 4); std::memcpy(&b[i * 4], &q, 4); }
          if (d == DataType::kBF16) { uint16_t p = FloatToBF16(x), q = FloatToBF16(y); std::memcpy(&a[i * 2], &p, 2); std::memcpy(&b[i * 2], &q, 2); }
          if (d == DataType::kF16) { uint16_t p = FloatToF16(x), q = FloatToF16(y); std::memcpy(&a[i * 2], &p, 2); std::memcpy(&b[i * 2], &q, 2); }
        }
        ReduceInto(out.data(), a.data(), b.data(), n, d, op);
        for (size_t i = 0; i < n; ++i) {
          auto get = [&](const std::vector<char>& v) {
            std::vector<uint32_t> w(1, 0);
            std::memcpy(w.data(), &v[i * es], es);
            return Load(d, w, 0);
          };
          double x = get(a), y = get(b), got = get(out);
          double want = op == ReduceOp::kMax ? std::max(x, y) : op == ReduceOp::kMin ? std::min(x, y) : x + y;
          double tol = d == DataType::kBF16 ? 1.0 : d == DataType::kF16 ? 0.125 : d == DataType::kF32 ? 1e-4 : 0;
          ASSERT_NEAR(got, want, tol) << DataTypeName(d) << " " << ReduceOpName(op) << " n=" << n << " i=" << i;
        }
      }
    }
  }
}

TEST(Reduce, InPlaceAliasingAndAverage) {
  std::vector<float> a = {1, 2, 3, 4, 5}, b = {10, 20, 30, 40, 50};
  ReduceInto(a.data(), a.data(), b.data(), 5, DataType::kF32, ReduceOp::kSum);
  EXPECT_EQ(a, (std::vector<float>{11, 22, 33, 44, 55}));
  FinishAverage(a.data(), 5, DataType::kF32, 11);
  EXPECT_FLOAT_EQ(a[4], 5.0f);
  std::vector<int32_t> i = {7, -7, 9};
  FinishAverage(i.data(), 3, DataType::kI32, 2);
  EXPECT_EQ(i, (std::vector<int32_t>{3, -3, 4}));  // truncating division
}

TEST(Reduce, HalfConversionsRoundAndKeepSpecials) {
  EXPECT_EQ(FloatToBF16(1.0f), 0x3F80);
  EXPECT_EQ(FloatToBF16(1.00390625f), 0x3F80);  // tie rounds to even
  EXPECT_TRUE(std::isnan(BF16ToFloat(FloatToBF16(std::numeric_limits<float>::quiet_NaN()))));
  EXPECT_EQ(FloatToF16(1.0f), 0x3C00);
  EXPECT_EQ(FloatToF16(65504.0f), 0x7BFF);
  EXPECT_EQ(FloatToF16(1e6f), 0x7C00);                 // overflow -> inf
  EXPECT_EQ(FloatToF16(5.960464477539063e-08f), 0x0001);  // smallest subnormal
  EXPECT_FLOAT_EQ(F16ToFloat(0x0001), 5.960464477539063e-08f);
  EXPECT_FLOAT_EQ(F16ToFloat(0xC000), -2.0f);
  EXPECT_TRUE(std::isinf(F16ToFloat(0x7C00)));
  for (uint32_t h = 0; h < 0x7C00; ++h) {  // every finite f16 survives a round trip
    ASSERT_EQ(FloatToF16(F16ToFloat(static_cast<uint16_t>(h))), h);
  }
}

}  // namespace
}  // namespace gantry::comm
