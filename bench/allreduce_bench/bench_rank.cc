// Rank-side timing loops: ours (any Communicator backend), Gloo (AllreduceRingChunked over
// gloo's TCP transport) and Open MPI (MPI_Allreduce). Buffers are allocated and touched once
// at the largest size, so every implementation is timed on warm memory for our buffers.
#include "bench/allreduce_bench/bench_rank.h"

#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>

#include <gloo/allreduce_ring_chunked.h>
#include <gloo/barrier_all_to_all.h>
#include <gloo/rendezvous/context.h>
#include <gloo/rendezvous/file_store.h>
#include <gloo/transport/tcp/device.h>

#include "comm/factory.h"

namespace gantry::bench {
namespace {

constexpr int kReps = 3;
// Gloo gives up on a silent peer after this (its default is 30 s); ours use GANTRY_COMM_TIMEOUT_S.
constexpr int kPeerTimeoutS = 60;
using Clock = std::chrono::steady_clock;

// Median over kReps repetitions of (time for `iters` ops) / iters; `sync` aligns the ranks.
template <typename Op, typename Sync>
double TimeOp(int iters, Op op, Sync sync) {
  for (int i = 0; i < std::max(2, iters / 10); ++i) op();  // warm-up
  std::vector<double> t;
  for (int rep = 0; rep < kReps; ++rep) {
    sync();
    auto start = Clock::now();
    for (int i = 0; i < iters; ++i) op();
    t.push_back(std::chrono::duration<double>(Clock::now() - start).count() / iters);
  }
  std::sort(t.begin(), t.end());
  return t[kReps / 2];
}

void Report(int rank, size_t bytes, double seconds) {
  if (rank != 0) return;
  std::printf("RESULT %zu %.9f\n", bytes, seconds);
  std::fflush(stdout);
}

std::vector<float> WarmBuffer(size_t bytes) {
  return std::vector<float>(bytes / sizeof(float), 1.0f);  // the fill touches every page once
}

}  // namespace

std::vector<size_t> BenchSizes(size_t min_bytes, size_t max_bytes) {
  std::vector<size_t> s;
  for (size_t b = min_bytes; b <= max_bytes; b *= 4) s.push_back(b);
  return s;
}

int ItersFor(size_t bytes) {
  return static_cast<int>(std::clamp<size_t>((256u << 20) / bytes, 3, 1000));
}

int RunOursRank(const std::vector<size_t>& sizes, bool in_place) {
  auto session = comm::CreateCommunicatorFromEnvironment(comm::CommOptions());
  if (!session.ok()) {
    std::fprintf(stderr, "ours: %s\n", session.status().ToString().c_str());
    return 1;
  }
  comm::Communicator& c = *session->comm;
  auto send = WarmBuffer(sizes.back()), recv = WarmBuffer(sizes.back());
  // GANTRY_BENCH_SYMMETRIC=1: in place on the backend's symmetric memory (as the data-parallel
  // engine keeps its gradients), else out of place on ordinary memory.
  float* in = send.data();
  float* out = recv.data();
  std::shared_ptr<void> symmetric;
  if (in_place) out = in;
  if (const char* v = std::getenv("GANTRY_BENCH_SYMMETRIC"); v && std::string(v) == "1") {
    auto mem = c.AllocateSymmetric(sizes.back());
    if (!mem.ok() || *mem == nullptr) {
      std::fprintf(stderr, "ours: no symmetric memory: %s\n",
                   mem.ok() ? "the backend has none" : mem.status().ToString().c_str());
      return 1;
    }
    symmetric = *mem;
    in = out = static_cast<float*>(symmetric.get());
    std::fill(in, in + sizes.back() / sizeof(float), 1.0f);
  }
  for (size_t bytes : sizes) {
    const size_t n = bytes / sizeof(float);
    Status err;
    double s = TimeOp(ItersFor(bytes), [&] {
      Status st = c.Allreduce(in, out, n, comm::DataType::kF32, comm::ReduceOp::kSum)->Wait();
      if (!st.ok()) err = st;
    }, [&] { c.Barrier()->Wait().IgnoreError(); });
    if (!err.ok()) {
      std::fprintf(stderr, "ours: %s\n", err.ToString().c_str());
      return 1;
    }
    Report(c.rank(), bytes, s);
  }
  return 0;
}

int RunGlooRank(const std::vector<size_t>& sizes) {
  const int rank = std::atoi(std::getenv("RANK")), size = std::atoi(std::getenv("WORLD_SIZE"));
  gloo::transport::tcp::attr attr("127.0.0.1");
  auto device = gloo::transport::tcp::CreateDevice(attr);
  auto context = std::make_shared<gloo::rendezvous::Context>(rank, size);
  gloo::rendezvous::FileStore store(std::getenv("GANTRY_BENCH_GLOO_DIR"));
  context->setTimeout(std::chrono::seconds(kPeerTimeoutS));
  context->connectFullMesh(store, device);
  auto buf = WarmBuffer(sizes.back());
  // Gloo's tcp pair calls setsockopt(SO_SNDBUF, 2 x message) whenever a message is bigger than
  // the buffer it set last; that pins the buffer and switches off the kernel's autotuning. If
  // the first message is 4 KiB the socket is pinned at 4.6 KB and 16 KiB allreduces stall for
  // ~12-25 ms each (delayed ACKs): minutes per run. Running the largest allreduce first sizes
  // the buffer once at its cap (net.core.wmem_max), which is Gloo at its best.
  gloo::AllreduceRingChunked<float>(context, {buf.data()}, static_cast<int>(buf.size())).run();
  gloo::BarrierAllToAll barrier(context);
  for (size_t bytes : sizes) {
    const int n = static_cast<int>(bytes / sizeof(float));
    gloo::AllreduceRingChunked<float> allreduce(context, {buf.data()}, n);
    double s = TimeOp(ItersFor(bytes), [&] { allreduce.run(); }, [&] { barrier.run(); });
    Report(rank, bytes, s);
  }
  return 0;
}

int RunMpiRank(const std::vector<size_t>& sizes, bool in_place) {
  MPI_Init(nullptr, nullptr);
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  auto send = WarmBuffer(sizes.back()), recv = WarmBuffer(sizes.back());
  for (size_t bytes : sizes) {
    const int n = static_cast<int>(bytes / sizeof(float));
    double s = TimeOp(ItersFor(bytes), [&] {
      MPI_Allreduce(in_place ? MPI_IN_PLACE : send.data(), recv.data(), n, MPI_FLOAT, MPI_SUM,
                    MPI_COMM_WORLD);
    }, [&] { MPI_Barrier(MPI_COMM_WORLD); });
    Report(rank, bytes, s);
  }
  MPI_Finalize();
  return 0;
}

}  // namespace gantry::bench
