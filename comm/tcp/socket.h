// Thin RAII TCP socket helpers with deadlines: listen, connect (retrying while the peer is not
// up yet), accept, and whole-buffer send/recv that give up at a deadline. Used by the TCP
// store and the tcp backend's connection setup; the ring data path runs its own poll loop.
// Never shrinks SO_SNDBUF/SO_RCVBUF (a small pinned buffer collapses throughput).
#pragma once

#include <chrono>
#include <cstddef>
#include <string>

#include "base/status.h"

namespace gantry::comm {

using Clock = std::chrono::steady_clock;
using Deadline = Clock::time_point;
inline Deadline DeadlineAfter(std::chrono::milliseconds timeout) { return Clock::now() + timeout; }
// Milliseconds left until `deadline` (0 when passed), clamped to int for poll().
int MillisLeft(Deadline deadline);
// Seconds since `start`, formatted "1.23 s".
std::string SecondsSince(Clock::time_point start);

class Socket {
 public:
  Socket() = default;
  explicit Socket(int fd) : fd_(fd) {}
  ~Socket() { Close(); }
  Socket(Socket&& o) noexcept : fd_(o.fd_) { o.fd_ = -1; }
  Socket& operator=(Socket&& o) noexcept;
  Socket(const Socket&) = delete;
  Socket& operator=(const Socket&) = delete;

  int fd() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  void Close();
  // Wakes any thread blocked on this socket (poll returns POLLHUP); safe from other threads.
  void Shutdown();
  // Local address as "ip" (what a peer would use to reach this host on this interface).
  std::string LocalHost() const;
  Status SetNonBlocking(bool on);
  // TCP_NODELAY and keepalive; optionally raises SO_SNDBUF/SO_RCVBUF to `buffer_bytes`
  // when that is larger than the current value (never lowers them).
  Status Tune(int buffer_bytes);

 private:
  int fd_ = -1;
};

// Binds host:port (port 0 = ephemeral) and listens. Host "" = all interfaces, IPv4 and IPv6
// (one dual-stack socket; IPv4 alone where the kernel has no IPv6); "0.0.0.0" = all IPv4 ones.
StatusOr<Socket> Listen(const std::string& host, int port, int backlog = 128);
int BoundPort(const Socket& s);
// Connects to host:port, retrying refused/unreachable attempts and names that do not resolve
// yet (a Kubernetes headless service appears once its pod runs) until the deadline. With
// `retry_refused` false a refused connection fails at once: for a peer that published its
// address only after listening, a refusal means it is gone.
StatusOr<Socket> Connect(const std::string& host, int port, Deadline deadline,
                         bool retry_refused = true);
StatusOr<Socket> Accept(const Socket& listener, Deadline deadline);

// Whole-buffer transfer on a blocking or non-blocking socket, giving up at `deadline`.
// Errors: kDeadlineExceeded, kUnavailable (peer closed / reset), kSystemError.
Status SendAll(const Socket& s, const void* data, size_t n, Deadline deadline);
Status RecvAll(const Socket& s, void* data, size_t n, Deadline deadline);

}  // namespace gantry::comm
