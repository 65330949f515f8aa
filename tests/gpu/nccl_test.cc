// NCCL backend on real GPUs (label gpu; every test skips without a CUDA device). One rank per
// visible device (at most 4), each a thread with its own communicator; the unique id travels
// through one store, as it does between processes. NCCL refuses two ranks on one device, so a
// one-GPU machine (the H200 check box) runs one-rank groups: that still drives every dtype, op,
// count, in-place buffer, stream ordering, abort and error path through NCCL on the device;
// sums across ranks need a machine with two GPUs or more. Values are small integers, so every
// reduction is exact whatever order NCCL combines them in.
#include <gtest/gtest.h>

#include <cuda_runtime.h>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cstdlib>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "comm/bootstrap/tcp_store.h"
#include "comm/nccl/nccl_communicator.h"
#include "comm/reduce.h"

namespace gantry::comm {
namespace {

int Devices() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) return 0;
  return n;
}
int Ranks() { return std::min(Devices(), 4); }

#define SKIP_WITHOUT_GPU() \
  if (Devices() == 0) GTEST_SKIP() << "no CUDA device"

// Runs body(rank, communicator) on `n` threads, one device each, with communicators created
// concurrently through one store. Failures inside a thread are recorded by gtest as usual.
void RunRanks(int n, const std::function<void(int, NcclCommunicator&)>& body,
              const CommOptions& base = {}) {
  auto store = std::make_shared<MemoryStore>();
  std::vector<std::thread> threads;
  for (int r = 0; r < n; ++r) {
    threads.emplace_back([&, r] {
      ASSERT_EQ(cudaSetDevice(r), cudaSuccess);
      Bootstrap boot(r, n, store);
      CommOptions o = base;
      o.cuda = true;
      // A failing rank must not leave the others waiting past ctest's limit (the default comm
      // timeout is 5 minutes): the error names the operation instead of a test timeout.
      if (o.timeout == CommOptions{}.timeout) o.timeout = std::chrono::seconds(60);
      auto c = NcclCommunicator::Create(boot, o);
      ASSERT_TRUE(c.ok()) << "rank " << r << ": " << c.status().ToString();
      EXPECT_EQ((*c)->device(), r);
      body(r, **c);
    });
  }
  for (auto& t : threads) t.join();
}

// Host-side value codec per dtype (exact for the small integers used here), on comm's own
// conversions (comm/reduce.h).
void Put(DataType d, std::vector<char>& buf, size_t i, float v) {
  char* p = buf.data() + i * DataTypeSize(d);
  switch (d) {
    case DataType::kF32: std::memcpy(p, &v, 4); break;
    case DataType::kI32: {
      const int32_t x = static_cast<int32_t>(v);
      std::memcpy(p, &x, 4);
      break;
    }
    case DataType::kBF16: {
      const uint16_t h = FloatToBF16(v);
      std::memcpy(p, &h, 2);
      break;
    }
    case DataType::kF16: {
      const uint16_t h = FloatToF16(v);
      std::memcpy(p, &h, 2);
      break;
    }
  }
}
float Get(DataType d, const std::vector<char>& buf, size_t i) {
  const char* p = buf.data() + i * DataTypeSize(d);
  switch (d) {
    case DataType::kF32: {
      float v;
      std::memcpy(&v, p, 4);
      return v;
    }
    case DataType::kI32: {
      int32_t x;
      std::memcpy(&x, p, 4);
      return static_cast<float>(x);
    }
    case DataType::kBF16:
    case DataType::kF16: {
      uint16_t h;
      std::memcpy(&h, p, 2);
      return d == DataType::kBF16 ? BF16ToFloat(h) : F16ToFloat(h);
    }
  }
  return 0;
}

// Rank r's element i: an integer in [-8, 8] that differs between ranks and along the buffer.
float Value(int rank, size_t i) { return static_cast<float>(static_cast<int>((i * 7 + rank * 13) % 17) - 8); }

float Expected(ReduceOp op, int n, size_t i) {
  float acc = Value(0, i);
  for (int r = 1; r < n; ++r) {
    float v = Value(r, i);
    acc = op == ReduceOp::kMax ? std::max(acc, v) : op == ReduceOp::kMin ? std::min(acc, v) : acc + v;
  }
  return op == ReduceOp::kAvg ? acc / static_cast<float>(n) : acc;
}

struct DeviceBuffer {
  void* p = nullptr;
  explicit DeviceBuffer(size_t bytes) { EXPECT_EQ(cudaMalloc(&p, std::max<size_t>(bytes, 4)), cudaSuccess); }
  ~DeviceBuffer() { cudaFree(p); }
  char* c() { return static_cast<char*>(p); }
};

std::vector<char> Download(const void* p, size_t bytes) {
  std::vector<char> out(bytes);
  if (bytes) EXPECT_EQ(cudaMemcpy(out.data(), p, bytes, cudaMemcpyDeviceToHost), cudaSuccess);
  return out;
}

std::string Name(DataType d) { return std::string(DataTypeName(d)); }

// Every dtype x op x count (0, 1, 7, 1023, 1 Mi + 3), in and out of place, against the host
// reference; rank `rank` of `n`.
void CheckAllreduceMatrix(int rank, int n, NcclCommunicator& c) {
  for (DataType d : {DataType::kF32, DataType::kBF16, DataType::kF16, DataType::kI32}) {
    for (ReduceOp op : {ReduceOp::kSum, ReduceOp::kAvg, ReduceOp::kMax, ReduceOp::kMin}) {
      if (op == ReduceOp::kAvg && d == DataType::kI32) continue;  // avg is for floats
      for (size_t count : {size_t{0}, size_t{1}, size_t{7}, size_t{1023}, (size_t{1} << 20) + 3}) {
        for (bool in_place : {false, true}) {
          const size_t es = DataTypeSize(d), bytes = count * es;
          std::vector<char> host(bytes);
          for (size_t i = 0; i < count; ++i) Put(d, host, i, Value(rank, i));
          DeviceBuffer send(bytes), recv(bytes);
          if (bytes) ASSERT_EQ(cudaMemcpy(send.p, host.data(), bytes, cudaMemcpyHostToDevice), cudaSuccess);
          void* out = in_place ? send.p : recv.p;
          Status s = c.Allreduce(send.p, out, count, d, op)->Wait(std::chrono::seconds(60));
          ASSERT_TRUE(s.ok()) << s.ToString();
          std::vector<char> got = Download(out, bytes);
          size_t bad = 0, first = 0;
          for (size_t i = 0; i < count; ++i) {
            float want = Expected(op, n, i);
            if (d == DataType::kI32 && op == ReduceOp::kAvg) want = static_cast<float>(static_cast<int>(want));
            const float tol = (op == ReduceOp::kAvg && n % 2 == 1) ? 1e-2f * std::abs(want) + 1e-2f : 0.0f;
            if (std::abs(Get(d, got, i) - want) > tol && bad++ == 0) first = i;
          }
          EXPECT_EQ(bad, 0u) << "rank " << rank << " " << Name(d) << " " << ReduceOpName(op)
                             << " count " << count << (in_place ? " in place" : "")
                             << ": first wrong element " << first << " = " << Get(d, got, first)
                             << ", want " << Expected(op, n, first);
        }
      }
    }
  }
}

TEST(Nccl, AllreduceEveryDtypeOpAndCountMatchesTheReference) {
  SKIP_WITHOUT_GPU();
  const int n = Ranks();
  RunRanks(n, [&](int rank, NcclCommunicator& c) { CheckAllreduceMatrix(rank, n, c); });
}

// Broadcast from every root, allgather, reduce-scatter and a barrier; rank `rank` of `n`.
void CheckOtherCollectives(int rank, int n, NcclCommunicator& c) {
  const size_t count = 1000003;
  std::vector<char> host(count * 4);
  // Broadcast from every root.
  for (int root = 0; root < n; ++root) {
    for (size_t i = 0; i < count; ++i) Put(DataType::kF32, host, i, Value(rank, i));
    DeviceBuffer buf(count * 4);
    ASSERT_EQ(cudaMemcpy(buf.p, host.data(), count * 4, cudaMemcpyHostToDevice), cudaSuccess);
    ASSERT_TRUE(c.Broadcast(buf.p, count, DataType::kF32, root)->Wait().ok());
    std::vector<char> got = Download(buf.p, count * 4);
    for (size_t i = 0; i < count; i += 997) ASSERT_EQ(Get(DataType::kF32, got, i), Value(root, i)) << i;
  }
  // Allgather: block r of the result is rank r's input.
  {
    for (size_t i = 0; i < count; ++i) Put(DataType::kF32, host, i, Value(rank, i));
    DeviceBuffer send(count * 4), recv(count * 4 * n);
    ASSERT_EQ(cudaMemcpy(send.p, host.data(), count * 4, cudaMemcpyHostToDevice), cudaSuccess);
    ASSERT_TRUE(c.Allgather(send.p, recv.p, count, DataType::kF32)->Wait().ok());
    std::vector<char> got = Download(recv.p, count * 4 * n);
    for (int r = 0; r < n; ++r) {
      for (size_t i = 0; i < count; i += 991) {
        ASSERT_EQ(Get(DataType::kF32, got, r * count + i), Value(r, i)) << "block " << r << " " << i;
      }
    }
  }
  // ReduceScatter: this rank gets the sum over ranks of block `rank`.
  {
    const size_t block = 4099;
    std::vector<char> in(block * n * 4);
    for (size_t i = 0; i < block * n; ++i) Put(DataType::kF32, in, i, Value(rank, i));
    DeviceBuffer send(in.size()), recv(block * 4);
    ASSERT_EQ(cudaMemcpy(send.p, in.data(), in.size(), cudaMemcpyHostToDevice), cudaSuccess);
    ASSERT_TRUE(c.ReduceScatter(send.p, recv.p, block, DataType::kF32, ReduceOp::kSum)->Wait().ok());
    std::vector<char> got = Download(recv.p, block * 4);
    for (size_t i = 0; i < block; ++i) {
      ASSERT_EQ(Get(DataType::kF32, got, i), Expected(ReduceOp::kSum, n, rank * block + i)) << i;
    }
  }
  ASSERT_TRUE(c.Barrier()->Wait().ok());
  EXPECT_TRUE(c.AsyncError().ok());
  EXPECT_EQ(c.memory(), MemoryKind::kCuda);
  EXPECT_EQ(c.backend(), "nccl");
}

TEST(Nccl, BroadcastAllgatherReduceScatterAndBarrier) {
  SKIP_WITHOUT_GPU();
  const int n = Ranks();
  RunRanks(n, [&](int rank, NcclCommunicator& c) { CheckOtherCollectives(rank, n, c); });
}

TEST(Nccl, LargeInPlaceAllreduceOf64MiB) {
  SKIP_WITHOUT_GPU();
  const int n = Ranks();
  RunRanks(n, [&](int rank, NcclCommunicator& c) {
    const size_t count = (size_t{64} << 20) / 4;
    std::vector<char> host(count * 4);
    for (size_t i = 0; i < count; ++i) Put(DataType::kF32, host, i, Value(rank, i));
    DeviceBuffer buf(count * 4);
    ASSERT_EQ(cudaMemcpy(buf.p, host.data(), count * 4, cudaMemcpyHostToDevice), cudaSuccess);
    // Two back to back: the second consumes the first's result on the same stream.
    auto w1 = c.Allreduce(buf.p, buf.p, count, DataType::kF32, ReduceOp::kSum);
    auto w2 = c.Allreduce(buf.p, buf.p, count, DataType::kF32, ReduceOp::kMax);
    ASSERT_TRUE(w2->Wait(std::chrono::seconds(120)).ok());
    EXPECT_TRUE(w1->Done());
    std::vector<char> got = Download(buf.p, count * 4);
    for (size_t i = 0; i < count; i += 4093) {
      ASSERT_EQ(Get(DataType::kF32, got, i), Expected(ReduceOp::kSum, n, i)) << i;  // max of equal sums
    }
  });
}

// Ops wait for work the caller queued on its own stream (SetStream) before they start. The
// user stream first sleeps 100 ms in a host callback, then copies the input in; the allreduce
// is out of place into a buffer holding a sentinel. Had it not waited for the user stream, it
// would run during the sleep on the zeroed input (one rank: recv = send), and recv would hold
// zeros instead of the values, so this fails on one GPU too.
void CUDART_CB SleepOnTheStream(void*) { std::this_thread::sleep_for(std::chrono::milliseconds(100)); }

TEST(Nccl, OpsRunAfterWorkQueuedOnTheUserStream) {
  SKIP_WITHOUT_GPU();
  const int n = Ranks();
  RunRanks(n, [&](int rank, NcclCommunicator& c) {
    const size_t count = 8 << 20;
    cudaStream_t user;
    ASSERT_EQ(cudaStreamCreateWithFlags(&user, cudaStreamNonBlocking), cudaSuccess);
    c.SetStream(user);
    std::vector<char> host(count * 4);
    for (size_t i = 0; i < count; ++i) Put(DataType::kF32, host, i, Value(rank, i));
    float* pinned = nullptr;
    ASSERT_EQ(cudaMallocHost(&pinned, count * 4), cudaSuccess);
    std::memcpy(pinned, host.data(), count * 4);
    DeviceBuffer send(count * 4), recv(count * 4);
    ASSERT_EQ(cudaMemset(send.p, 0, count * 4), cudaSuccess);
    ASSERT_EQ(cudaMemset(recv.p, 0x7f, count * 4), cudaSuccess);  // 3.39e38 each: a sentinel
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);  // both fills done before any stream starts
    ASSERT_EQ(cudaLaunchHostFunc(user, SleepOnTheStream, nullptr), cudaSuccess);
    // The input arrives asynchronously on the user stream; the allreduce must see all of it.
    ASSERT_EQ(cudaMemcpyAsync(send.p, pinned, count * 4, cudaMemcpyHostToDevice, user), cudaSuccess);
    ASSERT_TRUE(c.Allreduce(send.p, recv.p, count, DataType::kF32, ReduceOp::kSum)
                    ->Wait(std::chrono::seconds(60))
                    .ok());
    std::vector<char> got = Download(recv.p, count * 4);
    size_t bad = 0, zeros = 0;
    for (size_t i = 0; i < count; ++i) {
      const float v = Get(DataType::kF32, got, i), want = Expected(ReduceOp::kSum, n, i);
      bad += v != want;
      zeros += v == 0.0f && want != 0.0f;
    }
    EXPECT_EQ(bad, 0u) << zeros << " elements are 0: the allreduce read the input before the "
                       << "user stream's copy wrote it";
    ASSERT_EQ(cudaStreamSynchronize(user), cudaSuccess);
    c.SetStream(nullptr);
    cudaFreeHost(pinned);
    cudaStreamDestroy(user);
  });
}

TEST(Nccl, AbortFailsLaterOpsAtOnceWithTheReason) {
  SKIP_WITHOUT_GPU();
  RunRanks(1, [&](int, NcclCommunicator& c) {
    DeviceBuffer buf(4096);
    ASSERT_TRUE(c.Allreduce(buf.p, buf.p, 1024, DataType::kF32, ReduceOp::kSum)->Wait().ok());
    c.Abort(CancelledError("test stops the job"));
    auto start = std::chrono::steady_clock::now();
    Status s = c.Allreduce(buf.p, buf.p, 1024, DataType::kF32, ReduceOp::kSum)->Wait();
    EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(1));
    EXPECT_EQ(s.code(), StatusCode::kAborted) << s.ToString();
    EXPECT_NE(s.message().find("test stops the job"), std::string::npos) << s.ToString();
    EXPECT_FALSE(c.AsyncError().ok());
    c.Abort(CancelledError("twice"));  // a second abort is harmless; the destructor frees nothing twice
  });
}

TEST(Nccl, AMissingDeviceIsAClearError) {
  SKIP_WITHOUT_GPU();
  Bootstrap boot(0, 1, std::make_shared<MemoryStore>());
  CommOptions o;
  o.cuda = true;
  o.cuda_device = Devices() + 3;
  auto bad = NcclCommunicator::Create(boot, o);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("cudaSetDevice(" + std::to_string(Devices() + 3) + ")"),
            std::string::npos)
      << bad.status().ToString();
}

// The unique id through a real TCP store on loopback, as RANK/WORLD_SIZE/MASTER_ADDR launches use.
TEST(Nccl, CreatesThroughATcpStore) {
  SKIP_WITHOUT_GPU();
  const int n = Ranks();
  auto server = TcpStoreServer::Start("127.0.0.1", 0);
  ASSERT_TRUE(server.ok()) << server.status().ToString();
  std::vector<std::thread> threads;
  for (int r = 0; r < n; ++r) {
    threads.emplace_back([&, r] {
      ASSERT_EQ(cudaSetDevice(r), cudaSuccess);
      auto store = TcpStore::Connect("127.0.0.1", (*server)->port(), std::chrono::seconds(10));
      ASSERT_TRUE(store.ok()) << store.status().ToString();
      Bootstrap boot(r, n, std::shared_ptr<Store>(std::move(*store)));
      CommOptions o;
      o.cuda = true;
      o.timeout = std::chrono::seconds(60);
      auto c = NcclCommunicator::Create(boot, o);
      ASSERT_TRUE(c.ok()) << c.status().ToString();
      DeviceBuffer buf(4);
      const int32_t one = 1;
      ASSERT_EQ(cudaMemcpy(buf.p, &one, 4, cudaMemcpyHostToDevice), cudaSuccess);
      ASSERT_TRUE((*c)->Allreduce(buf.p, buf.p, 1, DataType::kI32, ReduceOp::kSum)->Wait().ok());
      int32_t got = 0;
      ASSERT_EQ(cudaMemcpy(&got, buf.p, 4, cudaMemcpyDeviceToHost), cudaSuccess);
      EXPECT_EQ(got, n);
    });
  }
  for (auto& t : threads) t.join();
}

// Two processes on one GPU: NCCL refuses two ranks of one host on one device ("Duplicate GPU"),
// but a different NCCL_HOSTID per process makes them two "hosts" joined by NCCL's socket
// transport on loopback. This is the one test that runs NCCL's real cross-rank path (proxy
// threads, connection setup, a sum of two ranks' data) on a one-GPU machine; the one-rank
// groups above reduce to local copies. The test re-runs its own binary, filtered to itself,
// once per rank (fork after CUDA is initialised is not safe; exec is).
TEST(Nccl, TwoProcessesOnOneGpuOverSockets) {
  if (const char* child = std::getenv("GANTRY_NCCL_CHILD_RANK")) {
    const int r = std::atoi(child);
    ASSERT_EQ(cudaSetDevice(0), cudaSuccess);
    auto store = TcpStore::Connect("127.0.0.1", std::atoi(std::getenv("GANTRY_NCCL_CHILD_PORT")),
                                   std::chrono::seconds(30));
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    Bootstrap boot(r, 2, std::shared_ptr<Store>(std::move(*store)));
    CommOptions o;
    o.cuda = true;
    o.cuda_device = 0;
    o.timeout = std::chrono::seconds(60);
    auto c = NcclCommunicator::Create(boot, o);
    ASSERT_TRUE(c.ok()) << "rank " << r << ": " << c.status().ToString();
    const size_t n = (size_t{1} << 20) + 3;  // odd, over NCCL's chunk sizes
    std::vector<float> host(n);
    for (size_t i = 0; i < n; ++i) host[i] = float((i * (r + 3)) % 13);
    DeviceBuffer buf(n * sizeof(float));
    ASSERT_EQ(cudaMemcpy(buf.p, host.data(), n * 4, cudaMemcpyHostToDevice), cudaSuccess);
    Status st = (*c)->Allreduce(buf.p, buf.p, n, DataType::kF32, ReduceOp::kSum)->Wait();
    ASSERT_TRUE(st.ok()) << "rank " << r << ": " << st.ToString();
    ASSERT_EQ(cudaMemcpy(host.data(), buf.p, n * 4, cudaMemcpyDeviceToHost), cudaSuccess);
    size_t wrong = 0;
    for (size_t i = 0; i < n; ++i) wrong += host[i] != float((i * 3) % 13 + (i * 4) % 13);
    EXPECT_EQ(wrong, 0u) << "rank " << r << ": elements differ from the two ranks' sum";
    st = (*c)->Barrier()->Wait();
    EXPECT_TRUE(st.ok()) << st.ToString();
    // The same matrices as the one-process tests, now with a real second rank: every dtype,
    // op and count summed across two processes, and the other collectives.
    CheckAllreduceMatrix(r, 2, **c);
    CheckOtherCollectives(r, 2, **c);
    // Proof that this child ran this test (a filter matching nothing would exit 0 silently).
    if (!::testing::Test::HasFailure()) {
      std::FILE* f = std::fopen(std::getenv("GANTRY_NCCL_CHILD_DONE"), "w");
      if (f) std::fclose(f);
    }
    return;
  }
  SKIP_WITHOUT_GPU();
  auto server = TcpStoreServer::Start("127.0.0.1", 0);
  ASSERT_TRUE(server.ok()) << server.status().ToString();
  const std::string done_prefix =
      "/tmp/gantry-nccl-child-" + std::to_string(getpid()) + "-done-";
  for (int r = 0; r < 2; ++r) std::remove((done_prefix + std::to_string(r)).c_str());
  std::vector<pid_t> pids;
  for (int r = 0; r < 2; ++r) {
    const pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {  // exec at once: nothing CUDA runs in the forked image
      const std::string rank = std::to_string(r), port = std::to_string((*server)->port());
      const std::string host_id = "gantry-nccl-test-host-" + rank;
      setenv("GANTRY_NCCL_CHILD_RANK", rank.c_str(), 1);
      setenv("GANTRY_NCCL_CHILD_PORT", port.c_str(), 1);
      setenv("GANTRY_NCCL_CHILD_DONE", (done_prefix + rank).c_str(), 1);
      setenv("NCCL_HOSTID", host_id.c_str(), 1);
      for (const char* kv : {"NCCL_P2P_DISABLE=1", "NCCL_SHM_DISABLE=1", "NCCL_IB_DISABLE=1",
                             "NCCL_SOCKET_IFNAME=lo", "NCCL_NVLS_ENABLE=0"}) {
        putenv(const_cast<char*>(kv));
      }
      execl("/proc/self/exe", "/proc/self/exe", "--gtest_filter=Nccl.TwoProcessesOnOneGpuOverSockets",
            static_cast<char*>(nullptr));
      _exit(127);
    }
    pids.push_back(pid);
  }
  const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(100);
  std::vector<int> status(2, -1);
  for (int r = 0; r < 2; ++r) {
    while (status[r] == -1) {
      int ws = 0;
      if (waitpid(pids[r], &ws, WNOHANG) == pids[r]) {
        status[r] = WIFEXITED(ws) ? WEXITSTATUS(ws) : 128 + WTERMSIG(ws);
      } else if (std::chrono::steady_clock::now() > end) {
        for (pid_t p : pids) kill(p, SIGKILL);
        waitpid(pids[r], &ws, 0);
        status[r] = 124;
      } else {
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
      }
    }
  }
  EXPECT_EQ(status[0], 0) << "rank 0's run failed (its output is above)";
  EXPECT_EQ(status[1], 0) << "rank 1's run failed (its output is above)";
  for (int r = 0; r < 2; ++r) {
    const std::string done = done_prefix + std::to_string(r);
    EXPECT_EQ(access(done.c_str(), F_OK), 0) << "rank " << r << " did not run the test through";
    std::remove(done.c_str());
  }
}

}  // namespace
}  // namespace gantry::comm
