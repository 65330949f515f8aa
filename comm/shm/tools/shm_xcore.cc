// shm_xcore: the cross-core ceilings of a same-host allreduce. Two processes pinned to cores
// 0 and 1 share a buffer; in each round the "owner" writes B bytes (its cache now holds them
// dirty, as backward leaves a gradient bucket) and the "reader" then pulls them: a plain read
// (sum), a copy into its own buffer, or a reduce (own += peer). Prints GB/s of the pull per
// size, and the local memcpy of the same size for comparison. --streams S pulls in S
// interleaved sequential streams of 256-byte blocks (as comm/shm/shm_kernels.h does for big
// spans): more cross-core transfers in flight. A diagnostic, not a benchmark.
//   shm_xcore [--mib 4] [--reps 200] [--streams 1]
#include <sched.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

struct Shared {
  alignas(64) std::atomic<uint64_t> written{0};  // rounds the owner finished writing
  alignas(64) std::atomic<uint64_t> pulled{0};   // rounds the reader finished pulling
};

void Pin(int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  sched_setaffinity(0, sizeof(set), &set);
}

void WaitFor(const std::atomic<uint64_t>& c, uint64_t v) {
  while (c.load(std::memory_order_acquire) < v) {
  }
}

enum class Mode { kRead, kCopy, kReduce };
int g_streams = 1;

// fn(begin, end) over [0, n) as g_streams interleaved streams of 64-element blocks.
template <typename Fn>
void Interleaved(size_t n, Fn fn) {
  constexpr size_t kBlock = 64;
  const size_t part = n / g_streams / kBlock * kBlock;
  if (g_streams <= 1 || part == 0) return fn(size_t{0}, n);
  for (size_t off = 0; off < part; off += kBlock) {
    for (int s = 0; s < g_streams; ++s) fn(s * part + off, s * part + off + kBlock);
  }
  fn(g_streams * part, n);
}

// Reader-side time of one pull of n floats from `peer`.
double Pull(Mode m, const float* peer, float* mine, size_t n, volatile float* sink) {
  const auto t0 = Clock::now();
  if (m == Mode::kRead) {
    float acc = 0;
    Interleaved(n, [&](size_t b, size_t e) {
#pragma omp simd reduction(+ : acc)
      for (size_t i = b; i < e; ++i) acc += peer[i];
    });
    *sink = acc;
  } else if (m == Mode::kCopy) {
    Interleaved(n, [&](size_t b, size_t e) { std::memcpy(mine + b, peer + b, (e - b) * sizeof(float)); });
  } else {
    Interleaved(n, [&](size_t b, size_t e) {
#pragma omp simd
      for (size_t i = b; i < e; ++i) mine[i] += peer[i];
    });
  }
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

}  // namespace

int main(int argc, char** argv) {
  size_t max_mib = 4;
  int reps = 200;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::string(argv[i]) == "--mib") max_mib = std::strtoul(argv[i + 1], nullptr, 10);
    else if (std::string(argv[i]) == "--reps") reps = std::atoi(argv[i + 1]);
    else if (std::string(argv[i]) == "--streams") g_streams = std::max(1, std::atoi(argv[i + 1]));
  }
  const size_t max_bytes = max_mib << 20;
  void* mem = mmap(nullptr, sizeof(Shared) + max_bytes, PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED) return 1;
  auto* sh = new (mem) Shared;
  float* buf = reinterpret_cast<float*>(static_cast<char*>(mem) + sizeof(Shared));
  std::memset(buf, 0, max_bytes);
  std::printf("size      | pull read GB/s | pull copy GB/s | pull reduce GB/s | local memcpy GB/s\n");
  for (size_t bytes = 256u << 10; bytes <= max_bytes; bytes *= 2) {
    const size_t n = bytes / sizeof(float);
    double best[3] = {0, 0, 0};
    for (int m = 0; m < 3; ++m) {
      sh->written.store(0);
      sh->pulled.store(0);
      const pid_t owner = fork();
      if (owner == 0) {  // writes the buffer every round, after the reader pulled the last
        Pin(1);
        for (int r = 1; r <= reps; ++r) {
          WaitFor(sh->pulled, uint64_t(r - 1));
          for (size_t i = 0; i < n; ++i) buf[i] = float(r + i % 7);
          sh->written.store(uint64_t(r), std::memory_order_release);
        }
        _exit(0);
      }
      Pin(0);
      std::vector<float> mine(n, 1.0f);
      volatile float sink = 0;
      std::vector<double> t;
      for (int r = 1; r <= reps; ++r) {
        WaitFor(sh->written, uint64_t(r));
        t.push_back(Pull(Mode(m), buf, mine.data(), n, &sink));
        sh->pulled.store(uint64_t(r), std::memory_order_release);
      }
      waitpid(owner, nullptr, 0);
      std::sort(t.begin(), t.end());
      best[m] = double(bytes) / t[t.size() / 2] / 1e9;  // median
    }
    std::vector<char> a(bytes, 1), b(bytes);
    std::vector<double> lt;
    for (int r = 0; r < 50; ++r) {
      const auto t0 = Clock::now();
      std::memcpy(b.data(), a.data(), bytes);
      lt.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
    }
    std::sort(lt.begin(), lt.end());
    std::printf("%5zu KiB | %14.1f | %14.1f | %16.1f | %17.1f\n", bytes >> 10, best[0], best[1],
                best[2], double(bytes) / lt[lt.size() / 2] / 1e9);
  }
  return 0;
}
