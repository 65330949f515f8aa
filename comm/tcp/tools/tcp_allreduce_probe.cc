// tcp_allreduce_probe: times one allreduce size on a Communicator made from the environment
// (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT, GANTRY_COMM_*) and reports wall time and the
// process CPU time per op, which stays meaningful on a loaded machine. Used to tune comm/tcp.
//   tcp_allreduce_probe BYTES [ITERS] [REPS]   (rank 0 prints one line per rep)
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "comm/factory.h"

namespace {
double CpuSeconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return u.ru_utime.tv_sec + u.ru_stime.tv_sec + (u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}
}  // namespace

int main(int argc, char** argv) {
  using namespace gantry;
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s BYTES [ITERS] [REPS]\n", argv[0]);
    return 2;
  }
  const size_t bytes = std::strtoull(argv[1], nullptr, 10);
  const int iters = argc > 2 ? std::atoi(argv[2]) : 20, reps = argc > 3 ? std::atoi(argv[3]) : 5;
  auto session = comm::CreateCommunicatorFromEnvironment(comm::CommOptions());
  if (!session.ok()) {
    std::fprintf(stderr, "probe: %s\n", session.status().ToString().c_str());
    return 1;
  }
  comm::Communicator& c = *session->comm;
  const size_t n = bytes / sizeof(float);
  std::vector<float> send(n, 1.0f), recv(n, 0.0f);
  auto op = [&] {
    Status s = c.Allreduce(send.data(), recv.data(), n, comm::DataType::kF32, comm::ReduceOp::kSum)
                   ->Wait();
    if (!s.ok()) {
      std::fprintf(stderr, "probe: %s\n", s.ToString().c_str());
      std::exit(1);
    }
  };
  for (int i = 0; i < std::max(2, iters / 5); ++i) op();
  for (int r = 0; r < reps; ++r) {
    c.Barrier()->Wait().IgnoreError();
    const double cpu0 = CpuSeconds();
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < iters; ++i) op();
    const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const double cpu = CpuSeconds() - cpu0;
    if (c.rank() == 0) {
      std::printf("PROBE %zu wall_us %.1f cpu_us %.1f busbw %.3f\n", bytes, wall / iters * 1e6,
                  cpu / iters * 1e6, bytes / (wall / iters) / 1e9 * 2.0 * (c.size() - 1) / c.size());
    }
  }
  if (recv[0] != static_cast<float>(c.size())) {
    std::fprintf(stderr, "probe: wrong result %f\n", recv[0]);
    return 1;
  }
  return 0;
}
