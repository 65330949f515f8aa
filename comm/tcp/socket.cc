// Socket helpers: getaddrinfo-based listen/connect with deadlines and whole-buffer I/O.
#include "comm/tcp/socket.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <thread>

#include "base/logging.h"

namespace gantry::comm {

int MillisLeft(Deadline deadline) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
  if (left.count() <= 0) return 0;
  return left.count() > 1'000'000'000 ? 1'000'000'000 : static_cast<int>(left.count());
}

std::string SecondsSince(Clock::time_point start) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.2f s",
                std::chrono::duration<double>(Clock::now() - start).count());
  return buf;
}

Socket& Socket::operator=(Socket&& o) noexcept {
  if (this != &o) {
    Close();
    fd_ = o.fd_;
    o.fd_ = -1;
  }
  return *this;
}

void Socket::Close() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

void Socket::Shutdown() {
  if (fd_ >= 0) ::shutdown(fd_, SHUT_RDWR);
}

std::string Socket::LocalHost() const {
  sockaddr_storage ss{};
  socklen_t len = sizeof(ss);
  if (getsockname(fd_, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return "127.0.0.1";
  char host[NI_MAXHOST];
  if (getnameinfo(reinterpret_cast<sockaddr*>(&ss), len, host, sizeof(host), nullptr, 0,
                  NI_NUMERICHOST) != 0) {
    return "127.0.0.1";
  }
  return host;
}

Status Socket::SetNonBlocking(bool on) {
  int flags = fcntl(fd_, F_GETFL, 0);
  if (flags < 0) return ErrnoError("fcntl(F_GETFL)", errno);
  flags = on ? (flags | O_NONBLOCK) : (flags & ~O_NONBLOCK);
  if (fcntl(fd_, F_SETFL, flags) != 0) return ErrnoError("fcntl(F_SETFL)", errno);
  return OkStatus();
}

Status Socket::Tune(int buffer_bytes) {
  int one = 1;
  if (setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) != 0) {
    return ErrnoError("setsockopt(TCP_NODELAY)", errno);
  }
  setsockopt(fd_, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
  if (buffer_bytes > 0) {
    for (int opt : {SO_SNDBUF, SO_RCVBUF}) {
      int cur = 0;
      socklen_t len = sizeof(cur);
      getsockopt(fd_, SOL_SOCKET, opt, &cur, &len);
      if (cur < buffer_bytes) setsockopt(fd_, SOL_SOCKET, opt, &buffer_bytes, sizeof(buffer_bytes));
    }
  }
  return OkStatus();
}

namespace {

// `family` narrows a passive lookup of all interfaces ("" or "0.0.0.0", which is IPv4).
StatusOr<addrinfo*> Resolve(const std::string& host, int port, bool passive,
                            int family = AF_UNSPEC) {
  addrinfo hints{};
  hints.ai_family = family;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = passive ? AI_PASSIVE : 0;
  addrinfo* res = nullptr;
  std::string port_str = std::to_string(port);
  const char* h = (host.empty() || (passive && host == "0.0.0.0")) ? nullptr : host.c_str();
  if (passive && host == "0.0.0.0") hints.ai_family = AF_INET;
  int rc = getaddrinfo(h, port_str.c_str(), &hints, &res);
  if (rc != 0) {
    return UnavailableError("cannot resolve '" + host + ":" + port_str + "': " + gai_strerror(rc) +
                            "; check the host name (MASTER_ADDR) and DNS");
  }
  return res;
}

// Binds and listens on the first address of host:port that takes it; *err = the last errno.
StatusOr<Socket> ListenResolved(const std::string& host, int port, int backlog, int family,
                                int* err) {
  *err = 0;
  GANTRY_ASSIGN_OR_RETURN(addrinfo * res, Resolve(host, port, true, family));
  const std::string where = (host.empty() ? std::string("*") : host) + ":" + std::to_string(port);
  Status last = UnavailableError("no address for " + where);
  for (addrinfo* ai = res; ai; ai = ai->ai_next) {
    Socket s(::socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol));
    if (!s.valid()) {
      *err = errno;
      last = ErrnoError("socket for " + where, *err);
      continue;
    }
    int one = 1, zero = 0;
    setsockopt(s.fd(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    // All interfaces over IPv6 takes IPv4 too (whatever net.ipv6.bindv6only says).
    if (host.empty() && ai->ai_family == AF_INET6) {
      setsockopt(s.fd(), IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero));
    }
    if (::bind(s.fd(), ai->ai_addr, ai->ai_addrlen) != 0 || ::listen(s.fd(), backlog) != 0) {
      *err = errno;
      last = ErrnoError("bind/listen on " + where + " (is the port in use? pick another "
                        "MASTER_PORT)", *err);
      continue;
    }
    freeaddrinfo(res);
    return s;
  }
  freeaddrinfo(res);
  return last;
}

}  // namespace

StatusOr<Socket> Listen(const std::string& host, int port, int backlog) {
  int err = 0;
  if (!host.empty()) return ListenResolved(host, port, backlog, AF_UNSPEC, &err);
  // All interfaces: one dual-stack socket, so that MASTER_ADDR may name this host by an IPv4 or
  // an IPv6 address; IPv4 alone where the kernel has no IPv6. A port in use fails here: IPv4
  // alone on it would only half work.
  auto dual = ListenResolved("", port, backlog, AF_INET6, &err);
  if (dual.ok() || err == EADDRINUSE) return dual;
  GANTRY_LOG(DEBUG, "no IPv6 listener; IPv4 only")
      .Field("port", int64_t(port))
      .Field("error", dual.status());
  return ListenResolved("", port, backlog, AF_INET, &err);
}

int BoundPort(const Socket& s) {
  sockaddr_storage ss{};
  socklen_t len = sizeof(ss);
  getsockname(s.fd(), reinterpret_cast<sockaddr*>(&ss), &len);
  if (ss.ss_family == AF_INET6) return ntohs(reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port);
  return ntohs(reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
}

namespace {

// One non-blocking connect attempt bounded by the deadline; 0 on success, else errno.
int TryConnect(const Socket& s, const addrinfo* ai, Deadline deadline) {
  if (s.fd() < 0) return errno;
  int flags = fcntl(s.fd(), F_GETFL, 0);
  fcntl(s.fd(), F_SETFL, flags | O_NONBLOCK);
  int rc = ::connect(s.fd(), ai->ai_addr, ai->ai_addrlen);
  if (rc != 0 && errno != EINPROGRESS) return errno;
  if (rc != 0) {
    pollfd p{s.fd(), POLLOUT, 0};
    int n = ::poll(&p, 1, std::min(MillisLeft(deadline), 2000));
    if (n <= 0) return ETIMEDOUT;
    int err = 0;
    socklen_t len = sizeof(err);
    getsockopt(s.fd(), SOL_SOCKET, SO_ERROR, &err, &len);
    if (err != 0) return err;
  }
  fcntl(s.fd(), F_SETFL, flags);
  return 0;
}

}  // namespace

StatusOr<Socket> Connect(const std::string& host, int port, Deadline deadline,
                         bool retry_refused) {
  auto start = Clock::now();
  auto backoff = std::chrono::milliseconds(10);
  auto next_warning = start + std::chrono::seconds(10);
  for (;;) {
    StatusOr<addrinfo*> resolved = Resolve(host, port, false);
    int err = 0;
    std::string last;
    if (resolved.ok()) {
      addrinfo* res = *resolved;
      for (addrinfo* ai = res; ai; ai = ai->ai_next) {
        Socket s(::socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol));
        err = TryConnect(s, ai, deadline);
        if (err == 0) {
          freeaddrinfo(res);
          return s;
        }
      }
      freeaddrinfo(res);
      last = std::strerror(err);
      if (err == ECONNREFUSED && !retry_refused) {
        return UnavailableError("connect to " + host + ":" + std::to_string(port) +
                                ": connection refused; the peer published this address after "
                                "it was listening, so it has exited or closed it");
      }
    } else {
      last = resolved.status().message();  // a name that may not exist yet: retried
    }
    if (Clock::now() >= deadline) {
      return DeadlineExceededError("connect to " + host + ":" + std::to_string(port) +
                                   " failed for " + SecondsSince(start) + " (last error: " +
                                   last + "); is the peer running and reachable?");
    }
    if (Clock::now() >= next_warning) {  // a long silent wait looks like a hang
      GANTRY_LOG(WARNING, "still connecting")
          .Field("to", host + ":" + std::to_string(port))
          .Field("waited", SecondsSince(start))
          .Field("last_error", last);
      next_warning = Clock::now() + std::chrono::seconds(30);
    }
    std::this_thread::sleep_for(std::min<std::chrono::milliseconds>(
        backoff, std::chrono::milliseconds(MillisLeft(deadline) + 1)));
    backoff = std::min(backoff * 2, std::chrono::milliseconds(500));
  }
}

StatusOr<Socket> Accept(const Socket& listener, Deadline deadline) {
  for (;;) {
    pollfd p{listener.fd(), POLLIN, 0};
    int n = ::poll(&p, 1, MillisLeft(deadline));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return ErrnoError("poll(accept)", errno);
    if (n == 0) return DeadlineExceededError("accept: no peer connected in time");
    if (p.revents & (POLLERR | POLLHUP | POLLNVAL)) {
      return UnavailableError("accept: listening socket was shut down");
    }
    int fd = ::accept4(listener.fd(), nullptr, nullptr, SOCK_CLOEXEC);
    if (fd >= 0) return Socket(fd);
    if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED) {
      return ErrnoError("accept", errno);
    }
  }
}

Status SendAll(const Socket& s, const void* data, size_t n, Deadline deadline) {
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    ssize_t k = ::send(s.fd(), p, n, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (k > 0) {
      p += k;
      n -= static_cast<size_t>(k);
      continue;
    }
    if (k < 0 && errno == EINTR) continue;
    if (k < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
      if (errno == EPIPE || errno == ECONNRESET) return UnavailableError("peer closed the connection");
      return ErrnoError("send", errno);
    }
    pollfd pf{s.fd(), POLLOUT, 0};
    int rc = ::poll(&pf, 1, MillisLeft(deadline));
    if (rc == 0) return DeadlineExceededError("send timed out");
    if (rc < 0 && errno != EINTR) return ErrnoError("poll(send)", errno);
  }
  return OkStatus();
}

Status RecvAll(const Socket& s, void* data, size_t n, Deadline deadline) {
  char* p = static_cast<char*>(data);
  while (n > 0) {
    ssize_t k = ::recv(s.fd(), p, n, MSG_DONTWAIT);
    if (k > 0) {
      p += k;
      n -= static_cast<size_t>(k);
      continue;
    }
    if (k == 0) return UnavailableError("peer closed the connection");
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) {
      if (errno == ECONNRESET) return UnavailableError("peer reset the connection");
      return ErrnoError("recv", errno);
    }
    pollfd pf{s.fd(), POLLIN, 0};
    int rc = ::poll(&pf, 1, MillisLeft(deadline));
    if (rc == 0) return DeadlineExceededError("recv timed out");
    if (rc < 0 && errno != EINTR) return ErrnoError("poll(recv)", errno);
  }
  return OkStatus();
}

}  // namespace gantry::comm
