// Ceilings: memcpy and loopback TCP stream measurements.
#include "bench/allreduce_bench/ceilings.h"

#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <vector>

namespace gantry::bench {

double MemcpyGBps(size_t bytes) {
  static std::vector<char> a, b;
  if (a.size() < bytes) {
    a.assign(bytes, 1);
    b.assign(bytes, 2);
  }
  const int iters = static_cast<int>(std::clamp<size_t>((512u << 20) / bytes, 3, 2000));
  double best = 0;
  for (int rep = 0; rep < 5; ++rep) {
    auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < iters; ++i) {
      std::memcpy(b.data(), a.data(), bytes);
      asm volatile("" ::: "memory");
    }
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    best = std::max(best, bytes * static_cast<double>(iters) / s / 1e9);
  }
  return best;
}

double LoopbackTcpStreamGBps() {
  int lfd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(lfd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  listen(lfd, 1);
  socklen_t len = sizeof(addr);
  getsockname(lfd, reinterpret_cast<sockaddr*>(&addr), &len);
  const size_t kChunk = 1 << 20, kTotal = 1ull << 30;
  pid_t pid = fork();
  if (pid == 0) {  // receiver
    int c = accept(lfd, nullptr, nullptr);
    std::vector<char> buf(kChunk);
    while (recv(c, buf.data(), buf.size(), 0) > 0) {
    }
    _exit(0);
  }
  close(lfd);
  int s = socket(AF_INET, SOCK_STREAM, 0);
  double best = 0;
  if (connect(s, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) {
    std::vector<char> buf(kChunk, 7);
    for (int rep = 0; rep < 3; ++rep) {
      auto start = std::chrono::steady_clock::now();
      for (size_t sent = 0; sent < kTotal;) {
        ssize_t n = send(s, buf.data(), buf.size(), 0);
        if (n <= 0) break;
        sent += n;
      }
      double t = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      best = std::max(best, kTotal / t / 1e9);
    }
  }
  close(s);
  waitpid(pid, nullptr, 0);
  return best;
}

}  // namespace gantry::bench
