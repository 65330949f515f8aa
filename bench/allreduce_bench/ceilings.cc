// Ceilings: memcpy and loopback TCP stream measurements (one-way and full duplex).
#include "bench/allreduce_bench/ceilings.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <functional>
#include <vector>

namespace gantry::bench {
namespace {

using Clock = std::chrono::steady_clock;
constexpr size_t kChunk = 1 << 20;
constexpr int kSocketWaitMs = 10000;  // any single socket wait longer than this = failure

double Since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

void SetTimeouts(int fd) {
  timeval tv{kSocketWaitMs / 1000, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

// A connected loopback pair: `child` runs in a forked process on one end (its return value
// is the exit code), the parent's end is returned through `fd`. Returns the child's pid.
pid_t ForkConnected(const std::function<int(int)>& child, int* fd) {
  *fd = -1;
  int lfd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  if (bind(lfd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 || listen(lfd, 1) != 0 ||
      getsockname(lfd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    close(lfd);
    return -1;
  }
  SetTimeouts(lfd);  // bounds accept()
  pid_t pid = fork();
  if (pid == 0) {
    int c = accept(lfd, nullptr, nullptr);
    if (c < 0) _exit(1);
    SetTimeouts(c);
    _exit(child(c));
  }
  close(lfd);
  int s = socket(AF_INET, SOCK_STREAM, 0);
  SetTimeouts(s);
  if (connect(s, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(s);
    return pid;
  }
  *fd = s;
  return pid;
}

void Reap(pid_t pid) {
  if (pid <= 0) return;
  for (int i = 0; i < 500; ++i) {  // up to 5 s, then stop it
    if (waitpid(pid, nullptr, WNOHANG) == pid) return;
    usleep(10000);
  }
  kill(pid, SIGKILL);
  waitpid(pid, nullptr, 0);
}

// Sends and receives `bytes` on a non-blocking socket from one thread. False on error/stall.
bool Exchange(int fd, size_t bytes, std::vector<char>& out, std::vector<char>& in) {
  size_t sent = 0, got = 0;
  while (sent < bytes || got < bytes) {
    pollfd p{fd, static_cast<short>((got < bytes ? POLLIN : 0) | (sent < bytes ? POLLOUT : 0)), 0};
    if (poll(&p, 1, kSocketWaitMs) <= 0 || (p.revents & (POLLERR | POLLHUP))) return false;
    if (p.revents & POLLOUT) {
      ssize_t n = send(fd, out.data(), std::min(out.size(), bytes - sent), MSG_DONTWAIT);
      if (n < 0 && errno != EAGAIN) return false;
      sent += std::max<ssize_t>(n, 0);
    }
    if (p.revents & POLLIN) {
      ssize_t n = recv(fd, in.data(), std::min(in.size(), bytes - got), MSG_DONTWAIT);
      if (n == 0 || (n < 0 && errno != EAGAIN)) return false;
      got += std::max<ssize_t>(n, 0);
    }
  }
  return true;
}

}  // namespace

double MemcpyGBps(size_t bytes) {
  static std::vector<char> a, b;
  if (a.size() < bytes) {
    a.assign(bytes, 1);
    b.assign(bytes, 2);
  }
  const int iters = static_cast<int>(std::clamp<size_t>((512u << 20) / bytes, 3, 2000));
  double best = 0;
  for (int rep = 0; rep < 5; ++rep) {
    auto start = Clock::now();
    for (int i = 0; i < iters; ++i) {
      std::memcpy(b.data(), a.data(), bytes);
      asm volatile("" ::: "memory");
    }
    best = std::max(best, bytes * static_cast<double>(iters) / Since(start) / 1e9);
  }
  return best;
}

double LoopbackTcpStreamGBps() {
  const size_t kTotal = 1ull << 30;
  int s = -1;
  pid_t pid = ForkConnected([](int c) {  // receiver: drain until the sender closes
    std::vector<char> buf(kChunk);
    while (recv(c, buf.data(), buf.size(), 0) > 0) {
    }
    return 0;
  }, &s);
  double best = 0;
  if (s >= 0) {
    std::vector<char> buf(kChunk, 7);
    for (int rep = 0; rep < 3; ++rep) {
      auto start = Clock::now();
      size_t sent = 0;
      while (sent < kTotal) {
        ssize_t n = send(s, buf.data(), buf.size(), 0);
        if (n <= 0) break;
        sent += n;
      }
      if (sent < kTotal) break;
      best = std::max(best, kTotal / Since(start) / 1e9);
    }
    close(s);
  }
  Reap(pid);
  return best;
}

double DuplexTcpStreamGBps() {
  const size_t kTotal = 512u << 20;
  constexpr int kReps = 3;
  auto side = [&](int fd, double* best) {
    std::vector<char> out(kChunk, 7), in(kChunk);
    fcntl(fd, F_SETFL, O_NONBLOCK);
    for (int rep = 0; rep < kReps; ++rep) {
      if (!Exchange(fd, 1, out, in)) return false;  // line both sides up first
      auto start = Clock::now();
      if (!Exchange(fd, kTotal, out, in)) return false;
      if (best) *best = std::max(*best, kTotal / Since(start) / 1e9);
    }
    return true;
  };
  int s = -1;
  pid_t pid = ForkConnected([&](int c) { return side(c, nullptr) ? 0 : 1; }, &s);
  double best = 0;
  if (s >= 0) {
    if (!side(s, &best)) best = 0;
    close(s);
  }
  Reap(pid);
  return best;
}

}  // namespace gantry::bench
