// Symmetric memory (Communicator::AllocateSymmetric) with ranks as threads of this process:
// the shm window path gives the same bits as the staged path for every dtype/op and count,
// ranks that disagree on the offset get a clear error, and backends without symmetric memory
// say so with a null pointer. Multi-process use is covered by the data-parallel tests.
#include <gtest/gtest.h>

#include <sched.h>
#include <sys/mount.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <functional>
#include <thread>

#include "comm/factory.h"
#include "comm/reduce.h"
#include "comm/shm/shm_kernels.h"
#include "tests/unit/comm/rank_threads.h"

#include <atomic>

namespace gantry::comm {
namespace {

using std::chrono::milliseconds;
using Clock = std::chrono::steady_clock;

// Ranks as threads; window_min_bytes = 0 sends every in-place window allreduce down the
// window path.
void RunRanks(const std::string& backend, int world, size_t window_min_bytes,
              const std::function<void(Communicator&)>& fn) {
  testing::RunRanks(backend, world, milliseconds(20000), fn,
                    [&](CommOptions& o) { o.shm_window_min_bytes = window_min_bytes; });
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

// In a child with its own small /dev/shm (a tmpfs in a private mount namespace): a window that
// fits for one rank but not for both makes EVERY rank fall back to ordinary memory (a null
// pointer, no error), the rank that did get its part frees it, and a window that fits works.
// Returns 0 when all held, else a code naming the failed check (assertions cannot cross fork).
int FallbackInSmallDevShm() {
  if (unshare(CLONE_NEWNS) != 0) return 100;
  if (mount("none", "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) return 101;
  if (mount("tmpfs", "/dev/shm", "tmpfs", 0, "size=8m") != 0) return 102;
  std::atomic<int> failed{0};
  RunRanks("shm", 2, 0, [&](Communicator& c) {
    auto fail = [&](int code, const std::string& why) {
      std::fprintf(stderr, "rank %d: %s\n", c.rank(), why.c_str());
      failed = code;
    };
    if (!c.Barrier()->Wait().ok()) return fail(1, "barrier");
    struct statvfs st {};
    statvfs("/dev/shm", &st);
    // The same size on both ranks: 60% of what is free fits once, not twice.
    int32_t kib = int32_t(double(st.f_bavail) * double(st.f_frsize) * 0.6 / 1024);
    if (!c.Allreduce(&kib, &kib, 1, DataType::kI32, ReduceOp::kMin)->Wait().ok()) return fail(2, "min");
    // Rank 0 takes its part first, so exactly one rank fails to create its part.
    if (c.rank() == 1) std::this_thread::sleep_for(std::chrono::milliseconds(100));
    auto big = c.AllocateSymmetric(size_t(kib) << 10);
    if (!big.ok()) return fail(3, big.status().ToString());
    if (*big != nullptr) return fail(4, "got a window that cannot fit twice");
    auto half = c.AllocateSymmetric(size_t(kib / 2) << 10);  // the failed part was freed
    if (!half.ok() || *half == nullptr) return fail(5, "no window after the fallback");
    float* p = static_cast<float*>(half->get());
    std::fill(p, p + (size_t(kib / 2) << 8), 1.0f);
    if (!c.Allreduce(p, p, size_t(kib / 2) << 8, DataType::kF32, ReduceOp::kSum)->Wait().ok())
      return fail(6, "window allreduce");
    if (p[0] != 2.0f) return fail(7, "window allreduce result");
  });
  return failed;
}

TEST(ShmSymmetric, TooSmallDevShmFallsBackOnEveryRank) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root for a private /dev/shm mount";
  const pid_t pid = fork();
  if (pid == 0) _exit(FallbackInSmallDevShm());
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status)) << "child died";
  const int code = WEXITSTATUS(status);
  if (code >= 100) GTEST_SKIP() << "cannot mount a private /dev/shm here (step " << code << ")";
  EXPECT_EQ(code, 0) << "failed check " << code << " (the child's stderr says which rank)";
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

// SymmetricPeers (shm): after a peer's signal, its window is readable through Peer() with what
// it wrote before signalling; Peer() maps only symmetric memory; signals do not disturb the
// collectives that run meanwhile.
TEST(ShmSymmetric, PeersReadEachOthersWindowsAfterASignal) {
  RunRanks("shm", 3, 0, [](Communicator& c) {
    SymmetricPeers* peers = c.symmetric_peers();
    ASSERT_NE(peers, nullptr);
    const size_t n = 4096 + 7;
    auto mem = c.AllocateSymmetric((n + 16) * 4);
    ASSERT_TRUE(mem.ok() && *mem != nullptr);
    float* mine = static_cast<float*>(mem->get()) + 16;
    for (int round = 1; round <= 3; ++round) {
      for (size_t i = 0; i < n; ++i) mine[i] = float(c.rank() * 100000 + round * 10000 + int(i));
      peers->Signal(0, uint64_t(round));
      EXPECT_EQ(peers->PeekSignal(c.rank(), 0), uint64_t(round));
      for (int r = 0; r < c.size(); ++r) {
        Status s = peers->WaitSignal(r, 0, uint64_t(round), milliseconds(10000), "test round");
        ASSERT_TRUE(s.ok()) << s.ToString();
        const float* theirs = static_cast<const float*>(peers->Peer(mine, n * 4, r));
        ASSERT_NE(theirs, nullptr);
        if (r == c.rank()) EXPECT_EQ(theirs, mine);
        for (size_t i = 0; i < n; ++i) {
          ASSERT_EQ(theirs[i], float(r * 100000 + round * 10000 + int(i))) << "rank " << r;
        }
      }
      // Nobody rewrites its window before every peer has read this round.
      peers->Signal(1, uint64_t(round));
      for (int r = 0; r < c.size(); ++r) {
        ASSERT_TRUE(peers->WaitSignal(r, 1, uint64_t(round), milliseconds(10000), "read").ok());
      }
      int32_t x = c.rank();
      ASSERT_TRUE(c.Allreduce(&x, &x, 1, DataType::kI32, ReduceOp::kSum)->Wait().ok());
      EXPECT_EQ(x, 3);
    }
    std::vector<float> ordinary(64);
    EXPECT_EQ(peers->Peer(ordinary.data(), 64 * 4, 0), nullptr);
    EXPECT_EQ(peers->Peer(mine, n * 4, 3), nullptr);                // no such rank
    EXPECT_EQ(peers->Peer(mine, (n + 8192) * 4, 1), nullptr);  // runs past the (paged) window
    EXPECT_TRUE(c.AsyncError().ok());
  });
}

// A signal that never comes: the wait ends at its timeout with an error naming the rank and
// what was awaited, the communicator is broken, and the peer's next collective fails at once
// instead of waiting out its own timeout.
TEST(ShmSymmetric, SignalThatNeverComesTimesOutAndBreaksTheGroup) {
  RunRanks("shm", 2, 0, [](Communicator& c) {
    SymmetricPeers* peers = c.symmetric_peers();
    ASSERT_NE(peers, nullptr);
    if (c.rank() == 0) {
      const auto t0 = Clock::now();
      Status s = peers->WaitSignal(1, 2, 1, milliseconds(300), "bucket 4 of step 9");
      EXPECT_EQ(s.code(), StatusCode::kDeadlineExceeded) << s.ToString();
      EXPECT_NE(s.message().find("bucket 4 of step 9"), std::string::npos) << s.ToString();
      EXPECT_NE(s.message().find("rank 1"), std::string::npos) << s.ToString();
      EXPECT_LT(Clock::now() - t0, std::chrono::seconds(5));
      EXPECT_FALSE(c.AsyncError().ok());
      EXPECT_FALSE(peers->WaitSignal(1, 2, 1, milliseconds(300), "again").ok());  // broken
      Status bad = peers->WaitSignal(1, SymmetricPeers::kSignals, 1, milliseconds(10), "x");
      EXPECT_FALSE(bad.ok());
    } else {
      const auto t0 = Clock::now();
      Status s = c.Barrier()->Wait();  // rank 0 never comes: it broke the group instead
      EXPECT_EQ(s.code(), StatusCode::kUnavailable) << s.ToString();
      EXPECT_LT(Clock::now() - t0, std::chrono::seconds(10));  // the comm timeout is 20 s
    }
  });
}

TEST(ShmSymmetric, OnlyShmWithPeersHasSymmetricPeers) {
  RunRanks("tcp", 2, 0, [](Communicator& c) { EXPECT_EQ(c.symmetric_peers(), nullptr); });
  RunRanks("shm", 1, 0, [](Communicator& c) { EXPECT_EQ(c.symmetric_peers(), nullptr); });
}

// The staged allreduce writes big outputs with streaming stores (from
// shm_streaming_min_bytes, auto: the last-level cache size): forced on for every size, and
// off, it gives the same bits, also at ragged sizes and an unaligned output; auto is >= 4 MiB.
TEST(ShmStaged, StreamingStoresGiveTheSameBits) {
  EXPECT_GE(shm_kernels::StreamingMinBytes(0), size_t(4) << 20);
  EXPECT_EQ(shm_kernels::StreamingMinBytes(12345), 12345u);
  std::vector<std::vector<char>> results[2];
  for (int streaming : {0, 1}) {
    std::vector<std::vector<char>> out(2);
    testing::RunRanks("shm", 2, milliseconds(20000), [&](Communicator& c) {
      const size_t counts[] = {1000, (1u << 20) + 7, (3u << 20) + 1};
      std::vector<char> all;
      for (size_t count : counts) {
        std::vector<float> buf(count + 1);
        float* p = buf.data() + 1;  // not 64-byte aligned
        Fill(p, count, DataType::kF32, c.rank());
        ASSERT_TRUE(c.Allreduce(p, p, count, DataType::kF32, ReduceOp::kSum)->Wait().ok());
        all.insert(all.end(), reinterpret_cast<char*>(p), reinterpret_cast<char*>(p + count));
      }
      out[size_t(c.rank())] = std::move(all);
    }, [&](CommOptions& o) {
      o.shm_streaming_min_bytes = streaming ? 64 : (size_t(1) << 40);
    });
    results[streaming] = std::move(out);
  }
  ASSERT_EQ(results[0][0].size(), results[1][0].size());
  EXPECT_EQ(results[0][0], results[1][0]);
  EXPECT_EQ(results[0][1], results[1][1]);
  EXPECT_EQ(results[0][0], results[0][1]);
}

}  // namespace
}  // namespace gantry::comm
