// Symmetric memory (Communicator::AllocateSymmetric) with ranks as threads of this process:
// the shm window path gives the same bits as the staged path for every dtype/op and count,
// ranks that disagree on the offset get a clear error, and backends without symmetric memory
// say so with a null pointer. Multi-process use is covered by the data-parallel tests.
#include <gtest/gtest.h>

#include <cstring>
#include <functional>
#include <thread>

#include "comm/factory.h"
#include "comm/reduce.h"

namespace gantry::comm {
namespace {

using std::chrono::milliseconds;

void RunRanks(const std::string& backend, int world, size_t window_min_bytes,
              const std::function<void(Communicator&)>& fn) {
  auto store = std::make_shared<MemoryStore>();
  std::vector<std::thread> threads;
  for (int r = 0; r < world; ++r) {
    threads.emplace_back([&, r] {
      Bootstrap boot(r, world, store);
      CommOptions o;
      o.backend = backend;
      o.timeout = milliseconds(20000);
      o.shm_window_min_bytes = window_min_bytes;
      auto c = CreateCommunicator(o, boot);
      ASSERT_TRUE(c.ok()) << c.status().ToString();
      fn(**c);
    });
  }
  for (auto& t : threads) t.join();
}

// Element i of rank r's input, as raw bits of `dtype` (values with rounding in their sums).
void Fill(void* p, size_t count, DataType dtype, int rank) {
  for (size_t i = 0; i < count; ++i) {
    const float v = float((i * 37 + size_t(rank) * 101) % 1999) / 7.0f - 140.0f;
    switch (dtype) {
      case DataType::kF32: static_cast<float*>(p)[i] = v; break;
      case DataType::kI32: static_cast<int32_t*>(p)[i] = int32_t(v * 1000); break;
      case DataType::kBF16: static_cast<uint16_t*>(p)[i] = FloatToBF16(v); break;
      case DataType::kF16: static_cast<uint16_t*>(p)[i] = FloatToF16(v); break;
    }
  }
}

struct Case {
  DataType dtype;
  ReduceOp op;
};

// Same bytes from the window path (in place, inside symmetric memory, odd offset) as from the
// staged path on ordinary memory, for 2 and 3 ranks and counts around the stage sizes.
TEST(ShmSymmetric, WindowAllreduceGivesTheStagedBits) {
  for (int world : {2, 3}) {
    RunRanks("shm", world, /*window_min_bytes=*/0, [&](Communicator& c) {
      const size_t max_count = (1u << 20) + 3, offset = 5;  // elements
      auto mem = c.AllocateSymmetric((max_count + offset) * 4);
      ASSERT_TRUE(mem.ok()) << mem.status().ToString();
      ASSERT_NE(*mem, nullptr);
      char* window = static_cast<char*>(mem->get());
      std::vector<char> plain((max_count + offset) * 4);
      const Case cases[] = {{DataType::kF32, ReduceOp::kSum}, {DataType::kF32, ReduceOp::kAvg},
                            {DataType::kF32, ReduceOp::kMax}, {DataType::kBF16, ReduceOp::kSum},
                            {DataType::kI32, ReduceOp::kSum}, {DataType::kF16, ReduceOp::kMin}};
      for (const Case& k : cases) {
        for (size_t count : {size_t(0), size_t(1), size_t(7), size_t(1023), size_t(40000),
                             max_count}) {
          const size_t es = DataTypeSize(k.dtype), at = offset * es;
          Fill(window + at, count, k.dtype, c.rank());
          Fill(plain.data() + at, count, k.dtype, c.rank());
          Status a = c.Allreduce(window + at, window + at, count, k.dtype, k.op)->Wait();
          Status b = c.Allreduce(plain.data() + at, plain.data() + at, count, k.dtype, k.op)->Wait();
          ASSERT_TRUE(a.ok() && b.ok()) << a.ToString() << " / " << b.ToString();
          ASSERT_EQ(std::memcmp(window + at, plain.data() + at, count * es), 0)
              << "world " << world << " dtype " << DataTypeName(k.dtype) << " op "
              << ReduceOpName(k.op) << " count " << count;
        }
      }
      EXPECT_TRUE(c.AsyncError().ok());
    });
  }
}

// A window allreduce whose buffer sits at another offset on another rank is a mismatched
// collective (the peers would read the wrong bytes): both ranks get an error naming it.
TEST(ShmSymmetric, RanksAtDifferentOffsetsAreRejected) {
  RunRanks("shm", 2, 0, [](Communicator& c) {
    auto mem = c.AllocateSymmetric(1 << 16);
    ASSERT_TRUE(mem.ok() && *mem != nullptr);
    float* p = static_cast<float*>(mem->get()) + (c.rank() == 0 ? 0 : 64);
    Status s = c.Allreduce(p, p, 1000, DataType::kF32, ReduceOp::kSum)->Wait();
    ASSERT_FALSE(s.ok());
    EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition) << s.ToString();
    EXPECT_NE(s.message().find("allreduce #2"), std::string::npos) << s.ToString();
  });
}

// Several windows live side by side; a buffer outside every window takes the staged path.
TEST(ShmSymmetric, SeveralWindowsAndOrdinaryMemoryMix) {
  RunRanks("shm", 3, 0, [](Communicator& c) {
    auto a = c.AllocateSymmetric(4096 * 4), b = c.AllocateSymmetric(100);
    ASSERT_TRUE(a.ok() && b.ok() && *a != nullptr && *b != nullptr);
    std::vector<float> ordinary(4096, float(c.rank()));
    float* pa = static_cast<float*>(a->get());
    float* pb = static_cast<float*>(b->get());
    std::fill(pa, pa + 4096, float(c.rank() + 1));
    std::fill(pb, pb + 25, 2.0f);
    auto wa = c.Allreduce(pa, pa, 4096, DataType::kF32, ReduceOp::kSum);
    auto wo = c.Allreduce(std::span<float>(ordinary));
    auto wb = c.Allreduce(pb, pb, 25, DataType::kF32, ReduceOp::kAvg);
    ASSERT_TRUE(wa->Wait().ok() && wo->Wait().ok() && wb->Wait().ok());
    for (int i = 0; i < 4096; ++i) ASSERT_EQ(pa[i], 6.0f);
    for (float x : ordinary) ASSERT_EQ(x, 3.0f);
    for (int i = 0; i < 25; ++i) ASSERT_EQ(pb[i], 2.0f);
  });
}

TEST(ShmSymmetric, BackendsWithoutSymmetricMemoryReturnNull) {
  RunRanks("tcp", 2, 0, [](Communicator& c) {
    auto mem = c.AllocateSymmetric(4096);
    ASSERT_TRUE(mem.ok()) << mem.status().ToString();
    EXPECT_EQ(*mem, nullptr);
  });
  RunRanks("shm", 1, 0, [](Communicator& c) {  // one rank: nothing to share
    auto mem = c.AllocateSymmetric(4096);
    ASSERT_TRUE(mem.ok());
    EXPECT_EQ(*mem, nullptr);
  });
}

}  // namespace
}  // namespace gantry::comm
