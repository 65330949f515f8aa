// Communicator behaviour common to the host backends (tcp, shm), with ranks as threads of this
// process over a MemoryStore: results, mismatched collectives, timeouts naming the silent peer,
// Abort, argument errors, and the typed span helpers. Multi-process coverage is in
// tests/integration/comm_*_test.cc.
#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <functional>
#include <sstream>
#include <thread>

#include "comm/factory.h"
#include "tests/unit/comm/rank_threads.h"

namespace gantry::comm {
namespace {

using std::chrono::milliseconds;

using testing::RunRanks;

class HostBackend : public ::testing::TestWithParam<std::string> {};

TEST_P(HostBackend, AllreduceSpanSumAndMax) {
  RunRanks(GetParam(), 3, milliseconds(20000), [](Communicator& c) {
    std::vector<float> v(1001, static_cast<float>(c.rank() + 1));
    ASSERT_TRUE(c.Allreduce(std::span<float>(v))->Wait().ok());
    for (float x : v) ASSERT_EQ(x, 6.0f);
    std::vector<int32_t> m = {c.rank(), -c.rank()};
    ASSERT_TRUE(c.Allreduce(std::span<int32_t>(m), ReduceOp::kMax)->Wait().ok());
    EXPECT_EQ(m, (std::vector<int32_t>{2, 0}));
    EXPECT_TRUE(c.AsyncError().ok());
  });
}

// Queued collectives run in submission order whichever handle is waited on first (tcp may run
// the next op on the waiting thread itself); sizes differ per op, so a reordering on one rank
// is a mismatched collective, not a silent wrong sum.
TEST_P(HostBackend, QueuedOpsCompleteInOrderWhateverTheWaitOrder) {
  RunRanks(GetParam(), 2, milliseconds(20000), [](Communicator& c) {
    constexpr int kOps = 6;
    std::vector<std::vector<float>> bufs;
    for (int i = 0; i < kOps; ++i) bufs.emplace_back(size_t(7 + 300 * i), float(c.rank() + i));
    std::vector<WorkPtr> work;
    for (auto& b : bufs) work.push_back(c.Allreduce(std::span<float>(b)));
    for (int i : {0, 5, 2, 1, 4, 3}) {
      Status st = i == 2 ? work[i]->Wait(milliseconds(19000)) : work[i]->Wait();  // 2: not inline
      ASSERT_TRUE(st.ok()) << "op " << i << ": " << st.ToString();
    }
    for (int i = 0; i < kOps; ++i)
      for (float x : bufs[i]) ASSERT_EQ(x, float(1 + 2 * i)) << "op " << i;
    EXPECT_TRUE(c.AsyncError().ok());
  });
}

TEST_P(HostBackend, MismatchedCollectivesAreReported) {
  RunRanks(GetParam(), 2, milliseconds(3000), [](Communicator& c) {
    std::vector<float> v(100 + c.rank());
    Status s = c.Allreduce(v.data(), v.data(), v.size(), DataType::kF32, ReduceOp::kSum)->Wait();
    ASSERT_FALSE(s.ok());
    EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition) << s.ToString();
    EXPECT_NE(s.message().find("allreduce #1"), std::string::npos) << s.ToString();
    // The communicator is broken afterwards: later ops fail at once.
    EXPECT_FALSE(c.Barrier()->Wait(milliseconds(1000)).ok());
    EXPECT_FALSE(c.AsyncError().ok());
  });
}

TEST_P(HostBackend, SilentPeerTimesOutNamingIt) {
  RunRanks(GetParam(), 2, milliseconds(500), [](Communicator& c) {
    if (c.rank() == 1) {
      std::this_thread::sleep_for(milliseconds(1500));  // never joins the allreduce
      return;
    }
    std::vector<float> v(10);
    Status s = c.Allreduce(std::span<float>(v))->Wait();
    EXPECT_EQ(s.code(), StatusCode::kDeadlineExceeded) << s.ToString();
    EXPECT_NE(s.message().find("peer rank 1"), std::string::npos) << s.ToString();
    EXPECT_NE(s.message().find("allreduce #1"), std::string::npos) << s.ToString();
  });
}

TEST_P(HostBackend, AbortEndsPendingWork) {
  RunRanks(GetParam(), 2, milliseconds(30000), [](Communicator& c) {
    if (c.rank() == 1) {
      std::this_thread::sleep_for(milliseconds(300));
      return;
    }
    std::vector<float> v(10);
    auto w = c.Allreduce(std::span<float>(v));
    std::this_thread::sleep_for(milliseconds(50));
    c.Abort(CancelledError("test abort"));
    Status s = w->Wait(milliseconds(5000));
    EXPECT_EQ(s.code(), StatusCode::kAborted) << s.ToString();
    EXPECT_NE(s.message().find("test abort"), std::string::npos);
  });
}

TEST_P(HostBackend, BadArgumentsAreRejected) {
  RunRanks(GetParam(), 2, milliseconds(5000), [](Communicator& c) {
    float x = 0;
    EXPECT_EQ(c.Broadcast(&x, 1, DataType::kF32, 7)->Wait().code(), StatusCode::kInvalidArgument);
    EXPECT_EQ(c.Send(&x, 1, DataType::kF32, c.rank())->Wait().code(), StatusCode::kInvalidArgument);
    EXPECT_TRUE(c.Barrier()->Wait().ok());  // still healthy
  });
}

TEST_P(HostBackend, SendRecvBothWaysDoNotDeadlock) {
  RunRanks(GetParam(), 2, milliseconds(20000), [](Communicator& c) {
    std::vector<float> out(3 << 20, static_cast<float>(c.rank())), in(3 << 20);
    const int peer = 1 - c.rank();
    auto s = c.Send(out.data(), out.size(), DataType::kF32, peer, 9);
    auto r = c.Recv(in.data(), in.size(), DataType::kF32, peer, 9);
    ASSERT_TRUE(s->Wait().ok());
    ASSERT_TRUE(r->Wait().ok());
    EXPECT_EQ(in.front(), static_cast<float>(peer));
    EXPECT_EQ(in.back(), static_cast<float>(peer));
  });
}

INSTANTIATE_TEST_SUITE_P(Backends, HostBackend, ::testing::Values("tcp", "shm", "auto"));

// Two tcp ranks exchange whole small buffers (one round trip) and each reduces the pair
// itself, so both must reduce in rank order: operands whose order shows in the result (NaN
// against a number for max/min, +0 against -0) give the same bits on both ranks, and sums
// give the bits of the ring, in place (the exchange holds what it received until its own
// send of that chunk is out) and out of place, over many small chunks.
TEST(TcpExchange, BothRanksReduceInRankOrderAndMatchTheRing) {
  constexpr size_t kCount = 200000;  // 800 KB: 196 chunks of 4 KiB
  auto input = [](int rank, size_t i) {
    switch (i % 5) {
      case 0: return rank == 0 ? std::nanf("") : 1.0f;
      case 1: return rank == 0 ? 2.0f : std::nanf("");
      case 2: return rank == 0 ? 0.0f : -0.0f;
      case 3: return rank == 0 ? -0.0f : 0.0f;
      default: return 0.1f * float(i % 97) + 0.37f * float(rank);
    }
  };
  // results[exchange][op][in_place][rank]
  std::vector<float> results[2][4][2][2];
  const ReduceOp ops[] = {ReduceOp::kSum, ReduceOp::kAvg, ReduceOp::kMax, ReduceOp::kMin};
  for (int exchange = 0; exchange < 2; ++exchange) {
    RunRanks(
        "tcp", 2, milliseconds(20000),
        [&](Communicator& c) {
          for (int o = 0; o < 4; ++o) {
            for (int in_place = 0; in_place < 2; ++in_place) {
              std::vector<float> in(kCount), out(kCount, -7.0f);
              for (size_t i = 0; i < kCount; ++i) in[i] = input(c.rank(), i);
              float* dst = in_place ? in.data() : out.data();
              Status s = c.Allreduce(in.data(), dst, kCount, DataType::kF32, ops[o])->Wait();
              ASSERT_TRUE(s.ok()) << s.ToString();
              if (!in_place) {  // the input is left as it was
                for (size_t i = 0; i < kCount; ++i) {
                  const float want = input(c.rank(), i);
                  ASSERT_EQ(std::memcmp(&in[i], &want, sizeof(float)), 0) << "input " << i;
                }
              }
              results[exchange][o][in_place][c.rank()].assign(dst, dst + kCount);
            }
          }
        },
        [&](CommOptions& o) {
          o.tcp_chunk_bytes = 4096;
          o.tcp_exchange_max_bytes = exchange ? (1 << 20) : 0;
        });
  }
  for (int o = 0; o < 4; ++o) {
    for (int in_place = 0; in_place < 2; ++in_place) {
      const auto& r0 = results[1][o][in_place][0];
      const auto& r1 = results[1][o][in_place][1];
      ASSERT_EQ(r0.size(), kCount);
      ASSERT_EQ(r1.size(), kCount);
      EXPECT_EQ(std::memcmp(r0.data(), r1.data(), kCount * sizeof(float)), 0)
          << "op " << o << " in_place " << in_place << ": the two ranks disagree";
      for (size_t i = 4; i < kCount; i += 5) {  // plain numbers: the expected value
        const float a = input(0, i), b = input(1, i);
        const float want = o == 0 ? a + b : o == 1 ? (a + b) * 0.5f : o == 2 ? std::max(a, b)
                                                                             : std::min(a, b);
        ASSERT_EQ(r0[i], want) << "op " << o << " element " << i;
      }
      if (o <= 1) {  // sums: the bits of the ring
        EXPECT_EQ(std::memcmp(r0.data(), results[0][o][in_place][0].data(), kCount * sizeof(float)),
                  0)
            << "op " << o << " in_place " << in_place << ": exchange and ring differ";
      }
    }
  }
}

// In place, a rank that joins late finds its peer's whole buffer already queued and receives
// faster than it can send: it must keep each received chunk aside until its own send of that
// chunk is out, or the peer would get a partial sum back instead of this rank's input.
TEST(TcpExchange, InPlaceLateRankSendsItsInputNotTheSum) {
  constexpr size_t kCount = 8u << 20;  // 32 MiB in 4 KiB chunks
  RunRanks(
      "tcp", 2, milliseconds(60000),
      [&](Communicator& c) {
        std::vector<float> v(kCount);
        for (size_t i = 0; i < kCount; ++i) v[i] = float(i % 1000) + 1000.0f * float(c.rank());
        if (c.rank() == 1) std::this_thread::sleep_for(milliseconds(300));
        Status s = c.Allreduce(v.data(), v.data(), kCount, DataType::kF32, ReduceOp::kSum)->Wait();
        ASSERT_TRUE(s.ok()) << s.ToString();
        for (size_t i = 0; i < kCount; ++i) {
          ASSERT_EQ(v[i], 2.0f * float(i % 1000) + 1000.0f) << "rank " << c.rank() << " element " << i;
        }
      },
      [](CommOptions& o) {
        o.tcp_chunk_bytes = 4096;
        o.tcp_exchange_max_bytes = 64u << 20;
      });
}

// Ranks whose tcp settings differ (one rank's environment sets another exchange threshold)
// would cut collectives into messages of other meanings and sum garbage without an error:
// Create fails on every rank, naming the settings and both values.
TEST(TcpExchange, RanksWithDifferentSettingsRefuseToConnect) {
  auto store = std::make_shared<MemoryStore>();
  std::vector<Status> status(2);
  std::vector<std::thread> threads;
  for (int r = 0; r < 2; ++r) {
    threads.emplace_back([&, r] {
      Bootstrap boot(r, 2, store);
      CommOptions o;
      o.backend = "tcp";
      o.timeout = milliseconds(10000);
      o.tcp_exchange_max_bytes = r == 0 ? (256u << 10) : (1u << 20);
      status[r] = CreateCommunicator(o, boot).status();
    });
  }
  for (auto& t : threads) t.join();
  for (int r = 0; r < 2; ++r) {
    EXPECT_EQ(status[r].code(), StatusCode::kFailedPrecondition) << status[r].ToString();
    EXPECT_NE(status[r].ToString().find("rank 1 has GANTRY_COMM_TCP_EXCHANGE_MAX_BYTES = 1048576 "
                                        "but rank 0 has 262144"),
              std::string::npos)
        << status[r].ToString();
  }
}

// A store that, when rank 0 publishes its tcp address, first opens `strays` connections to it
// that never say hello (a port scan, a health probe), so they sit ahead of the real peer in
// rank 0's accept backlog.
class StrayConnectionsStore : public MemoryStore {
 public:
  explicit StrayConnectionsStore(int strays) : strays_(strays) {}
  ~StrayConnectionsStore() override {
    for (int fd : fds_) ::close(fd);
  }
  Status Set(const std::string& key, const std::string& value) override {
    if (key.ends_with("addr/0")) {
      std::istringstream in(value);
      std::string host;
      int port = 0;
      in >> host >> port;
      for (int i = 0; i < strays_; ++i) {
        int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_port = htons(uint16_t(port));
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        EXPECT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0) << port;
        fds_.push_back(fd);
      }
    }
    return MemoryStore::Set(key, value);
  }

 private:
  int strays_;
  std::vector<int> fds_;
};

// Connections that never say hello neither fail the set-up nor hold it up: their hellos are
// read side by side with the peers'. Read one at a time, each held it 5 s (3 here: 15 s).
TEST(TcpSetup, SilentStrayConnectionsDoNotHoldTheSetUp) {
  const auto start = std::chrono::steady_clock::now();
  RunRanks(
      "tcp", 2, milliseconds(60000),
      [](Communicator& c) {
        float x = 1.0f + c.rank();
        EXPECT_TRUE(c.Allreduce(&x, &x, 1, DataType::kF32, ReduceOp::kSum)->Wait().ok());
        EXPECT_EQ(x, 3.0f);
      },
      {}, std::make_shared<StrayConnectionsStore>(3));
  const double took =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_LT(took, 10.0) << "3 silent connections held the set-up (5 s each before)";
}

// A communicator destroyed while an op waits on a silent peer ends that op at once (it is
// aborted) instead of holding the destructor until the op's deadline (60 s here).
class DestroyInFlight : public ::testing::TestWithParam<std::string> {};

TEST_P(DestroyInFlight, DestroyingWithAnOpInFlightAbortsIt) {
  auto store = std::make_shared<MemoryStore>();
  std::vector<std::thread> threads;
  double destroy_s = -1;
  Status op_status;
  std::atomic<bool> rank1_ready{false};  // rank 0 aborts only once rank 1's set-up is through
  for (int r = 0; r < 2; ++r) {
    threads.emplace_back([&, r] {
      Bootstrap boot(r, 2, store);
      CommOptions o;
      o.backend = GetParam();
      o.timeout = milliseconds(60000);
      auto c = CreateCommunicator(o, boot);
      ASSERT_TRUE(c.ok()) << c.status().ToString();
      if (r == 1) {  // never joins the allreduce, and keeps its connections open 5 s
        rank1_ready = true;
        std::this_thread::sleep_for(milliseconds(5000));
        return;
      }
      std::vector<float> v(1000, 1.0f);
      WorkPtr w = (*c)->Allreduce(v.data(), v.data(), v.size(), DataType::kF32, ReduceOp::kSum);
      while (!rank1_ready) std::this_thread::sleep_for(milliseconds(10));
      std::this_thread::sleep_for(milliseconds(100));
      const auto start = std::chrono::steady_clock::now();
      c->reset();
      destroy_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      op_status = w->Wait(milliseconds(1000));
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_LT(destroy_s, 4.0) << "the destructor waited for the op to end on its own";
  EXPECT_EQ(op_status.code(), StatusCode::kAborted) << op_status.ToString();
  EXPECT_NE(op_status.ToString().find("destroyed with operations in flight"), std::string::npos)
      << op_status.ToString();
}

INSTANTIATE_TEST_SUITE_P(Backends, DestroyInFlight, ::testing::Values("tcp", "shm"));

// The same for the other settings a communicator's ranks must share: one rank with another
// shm pipeline depth, or another backend, fails Create on every rank naming it, at once,
// instead of reading stages at other offsets or waiting in another bootstrap scope until the
// timeout (60 s here) blaming the other rank for not publishing.
TEST(CommAgreement, ShmLayoutAndBackendMustMatchOnEveryRank) {
  struct Case {
    const char* want;
    std::function<void(CommOptions&, int rank)> set;
  };
  const Case cases[] = {
      {"rank 1 has GANTRY_COMM_SHM_STAGES = 2 but rank 0 has 4",
       [](CommOptions& o, int r) {
         o.backend = "shm";
         if (r == 1) o.shm_stages = 2;
       }},
      {"rank 1 has comm backend (comm.backend, --comm-backend, GANTRY_COMM_BACKEND) = shm but rank "
       "0 has tcp",
       [](CommOptions& o, int r) { o.backend = r == 0 ? "tcp" : "shm"; }},
  };
  for (const Case& c : cases) {
    auto store = std::make_shared<MemoryStore>();
    std::vector<Status> status(2);
    const auto start = std::chrono::steady_clock::now();
    std::vector<std::thread> threads;
    for (int r = 0; r < 2; ++r) {
      threads.emplace_back([&, r] {
        Bootstrap boot(r, 2, store);
        CommOptions o;
        o.timeout = milliseconds(60000);
        c.set(o, r);
        status[r] = CreateCommunicator(o, boot).status();
      });
    }
    for (auto& t : threads) t.join();
    EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(30)) << c.want;
    for (int r = 0; r < 2; ++r) {
      EXPECT_EQ(status[r].code(), StatusCode::kFailedPrecondition) << status[r].ToString();
      EXPECT_NE(status[r].ToString().find(c.want), std::string::npos) << status[r].ToString();
    }
  }
}

TEST(CommOptions, EnvOverridesAndValidation) {
  setenv("GANTRY_COMM_TIMEOUT_S", "2.5", 1);
  setenv("GANTRY_COMM_TCP_SOCKETS", "3", 1);
  CommOptions o;
  ASSERT_TRUE(o.ApplyEnv().ok());
  EXPECT_EQ(o.timeout, milliseconds(2500));
  EXPECT_EQ(o.tcp_sockets, 3);
  setenv("GANTRY_COMM_TCP_SOCKETS", "abc", 1);
  Status s = CommOptions().ApplyEnv();
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("GANTRY_COMM_TCP_SOCKETS"), std::string::npos);
  // Values that used to be cast without a word (1e10 sockets became INT_MIN, a 1e10 s
  // timeout overflowed into "0 ms", 2.5 sockets became 2).
  const std::pair<const char*, const char*> bad[] = {
      {"GANTRY_COMM_TCP_SOCKETS", "1e10"}, {"GANTRY_COMM_TCP_SOCKETS", "2.5"},
      {"GANTRY_COMM_TIMEOUT_S", "1e10"},   {"GANTRY_COMM_TIMEOUT_S", "inf"},
      {"GANTRY_COMM_TIMEOUT_S", "nan"},    {"GANTRY_COMM_SHM_STAGES", "-1"},
      {"GANTRY_COMM_TCP_CHUNK_BYTES", "1e30"},
      // 2^64 - 1 reads as the double 2^64, one past the largest size_t (it wrapped to 0).
      {"GANTRY_COMM_SHM_WINDOW_MIN_BYTES", "18446744073709551615"}};
  unsetenv("GANTRY_COMM_TCP_SOCKETS");
  for (const auto& [name, value] : bad) {
    setenv(name, value, 1);
    Status st = CommOptions().ApplyEnv();
    unsetenv(name);
    EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << name << "=" << value;
    EXPECT_NE(st.message().find(std::string(name) + "='" + value + "'"), std::string::npos)
        << st.ToString();
  }
  setenv("GANTRY_COMM_TIMEOUT_S", "604800", 1);
  EXPECT_TRUE(CommOptions().ApplyEnv().ok()) << "7 days is the largest timeout";
  unsetenv("GANTRY_COMM_TIMEOUT_S");
  unsetenv("GANTRY_COMM_TCP_SOCKETS");
  o = CommOptions();
  o.backend = "carrier-pigeon";
  EXPECT_EQ(o.Validate().code(), StatusCode::kInvalidArgument);
  CommSpec spec;
  spec.backend = "tcp";
  spec.timeout_s = 7;
  EXPECT_EQ(CommOptions::FromSpec(spec).timeout, milliseconds(7000));
}

TEST(CommFactory, SingleRankFromEmptyEnvironment) {
  auto s = CreateCommunicatorFromEnvironment(CommOptions());
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  EXPECT_EQ(s->comm->size(), 1);
  std::vector<float> v = {1, 2};
  ASSERT_TRUE(s->comm->Allreduce(std::span<float>(v), ReduceOp::kAvg)->Wait().ok());
  EXPECT_EQ(v, (std::vector<float>{1, 2}));
}

}  // namespace
}  // namespace gantry::comm
