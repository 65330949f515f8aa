// tcp_stream: loopback TCP ceilings for the tcp backend, between two processes on this host.
//   one-way: process A sends N bytes to B (what a one-directional stream can do);
//   duplex:  A and B each send N bytes to the other at the same time, over two sockets (one per
//            direction, the ring's layout), with a send thread and a receive thread per process;
//   duplex-poll: the same exchange driven by one poll() thread per process (non-blocking).
// A 2-rank ring allreduce of S bytes sends and receives S bytes per rank, so its busbw cannot
// beat the duplex per-direction rate. Usage: tcp_stream [--mib N] [--chunk-kib K]
// [--buffer-bytes B] [--reps R] [--json]. Prints GB/s per direction (best and median of reps,
// after one warm-up rep) and the CPU seconds both processes spent per GB moved.
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

namespace {

struct Config {
  size_t bytes = 256ull << 20;  // per direction per repetition
  size_t chunk = 1 << 20;       // bytes per send()/recv() call
  int buffer_bytes = 0;         // raise SO_SNDBUF/SO_RCVBUF to this (0 = kernel autotuning)
  int reps = 5;
  bool json = false;
};

[[noreturn]] void Die(const char* what) {
  std::fprintf(stderr, "tcp_stream: %s: %s\n", what, std::strerror(errno));
  std::exit(1);
}

// Every blocking call on a socket gives up after this long (a stuck peer must not hang us).
constexpr int kSocketTimeoutS = 10;

void SetTimeouts(int fd) {
  timeval tv{kSocketTimeoutS, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));  // recv and accept
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));  // send and connect
}

void Tune(int fd, const Config& cfg) {
  SetTimeouts(fd);
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  if (cfg.buffer_bytes > 0) {
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &cfg.buffer_bytes, sizeof(int));
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &cfg.buffer_bytes, sizeof(int));
  }
}

void SetNonBlocking(int fd) {
  if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL, 0) | O_NONBLOCK) != 0) Die("fcntl");
}

void SendAll(int fd, const char* p, size_t n, size_t chunk) {
  while (n > 0) {
    ssize_t k = send(fd, p, std::min(n, chunk), MSG_NOSIGNAL);
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) Die("send (timed out or peer gone)");
    p += k;
    n -= static_cast<size_t>(k);
  }
}

void RecvAll(int fd, char* p, size_t n, size_t chunk) {
  while (n > 0) {
    ssize_t k = recv(fd, p, std::min(n, chunk), 0);
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) Die("recv (timed out or peer gone)");
    p += k;
    n -= static_cast<size_t>(k);
  }
}

// Both directions from one thread: non-blocking sockets, poll() when neither can move.
void ExchangePoll(int out, int in, const char* src, char* dst, size_t n, size_t chunk) {
  size_t sent = 0, got = 0;
  while (sent < n || got < n) {
    bool moved = false;
    if (sent < n) {
      ssize_t k = send(out, src + sent, std::min(n - sent, chunk), MSG_NOSIGNAL | MSG_DONTWAIT);
      if (k > 0) sent += static_cast<size_t>(k), moved = true;
      else if (k < 0 && errno != EAGAIN && errno != EINTR) Die("send");
    }
    if (got < n) {
      ssize_t k = recv(in, dst + got, std::min(n - got, chunk), MSG_DONTWAIT);
      if (k > 0) got += static_cast<size_t>(k), moved = true;
      else if (k == 0 || (errno != EAGAIN && errno != EINTR)) Die("recv (peer gone?)");
    }
    if (moved) continue;
    pollfd p[2] = {{out, static_cast<short>(sent < n ? POLLOUT : 0), 0},
                   {in, static_cast<short>(got < n ? POLLIN : 0), 0}};
    if (poll(p, 2, kSocketTimeoutS * 1000) == 0) Die("poll: peer made no progress for 10 s");
  }
}

enum class Mode { kOneWay, kDuplex, kDuplexPoll };

// One repetition on one side. Side 0 (parent) sends on `out` and receives on `in`.
void RunSide(Mode mode, int side, int out, int in, std::vector<char>& src, std::vector<char>& dst,
             const Config& cfg) {
  if (mode == Mode::kOneWay) {
    if (side == 0) SendAll(out, src.data(), cfg.bytes, cfg.chunk);
    else RecvAll(in, dst.data(), cfg.bytes, cfg.chunk);
  } else if (mode == Mode::kDuplex) {
    std::thread tx([&] { SendAll(out, src.data(), cfg.bytes, cfg.chunk); });
    RecvAll(in, dst.data(), cfg.bytes, cfg.chunk);
    tx.join();
  } else {
    ExchangePoll(out, in, src.data(), dst.data(), cfg.bytes, cfg.chunk);
  }
}

double CpuSeconds(int who) {
  rusage u{};
  getrusage(who, &u);
  return u.ru_utime.tv_sec + u.ru_stime.tv_sec + (u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

struct Result {
  double best_gbps = 0, median_gbps = 0, cpu_s_per_gb = 0;
};

// Forks the peer, connects two sockets (parent->child, child->parent), runs `reps` repetitions
// separated by a pipe handshake, and returns per-direction rates measured by the parent.
Result Measure(Mode mode, const Config& cfg) {
  int lfd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  SetTimeouts(lfd);
  if (bind(lfd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) Die("bind");
  if (listen(lfd, 4) != 0) Die("listen");
  socklen_t len = sizeof(addr);
  getsockname(lfd, reinterpret_cast<sockaddr*>(&addr), &len);
  int go[2], done[2];
  if (pipe(go) != 0 || pipe(done) != 0) Die("pipe");
  std::vector<char> src(cfg.bytes, 7), dst(cfg.bytes, 0);  // touched once, before timing
  pid_t pid = fork();
  if (pid < 0) Die("fork");
  if (pid == 0) {  // child: side 1
    int a = socket(AF_INET, SOCK_STREAM, 0), b = socket(AF_INET, SOCK_STREAM, 0);
    SetTimeouts(a), SetTimeouts(b);
    if (connect(a, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) Die("connect");
    if (connect(b, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) Die("connect");
    Tune(a, cfg);
    Tune(b, cfg);  // a: parent -> child, b: child -> parent
    if (mode == Mode::kDuplexPoll) SetNonBlocking(a), SetNonBlocking(b);
    std::fill(dst.begin(), dst.end(), 1);  // COW: the child's own copy, touched before timing
    char c;
    double cpu0 = 0;
    for (int r = 0; r <= cfg.reps; ++r) {  // rep 0 is a warm-up (slow start, autotuning)
      if (read(go[0], &c, 1) != 1) _exit(1);
      if (r == 1) cpu0 = CpuSeconds(RUSAGE_SELF);
      RunSide(mode, 1, b, a, src, dst, cfg);
      if (r < cfg.reps && write(done[1], &c, 1) != 1) _exit(1);
    }
    const double cpu = CpuSeconds(RUSAGE_SELF) - cpu0;  // timed reps only
    if (write(done[1], &cpu, sizeof(cpu)) != sizeof(cpu)) _exit(1);
    _exit(0);
  }
  int a = accept(lfd, nullptr, nullptr), b = accept(lfd, nullptr, nullptr);
  if (a < 0 || b < 0) Die("accept (the child did not connect within 10 s)");
  Tune(a, cfg);
  Tune(b, cfg);
  if (mode == Mode::kDuplexPoll) SetNonBlocking(a), SetNonBlocking(b);
  std::fill(dst.begin(), dst.end(), 1);  // after fork the pages are shared: copy them now
  std::vector<double> rates;
  double cpu_self0 = 0, cpu_child = 0;
  for (int r = 0; r <= cfg.reps; ++r) {
    char c = 1;
    if (r == 1) cpu_self0 = CpuSeconds(RUSAGE_SELF);
    auto start = std::chrono::steady_clock::now();
    if (write(go[1], &c, 1) != 1) Die("write");
    RunSide(mode, 0, a, b, src, dst, cfg);
    if (r < cfg.reps && read(done[0], &c, 1) != 1) Die("read");
    if (r == cfg.reps && read(done[0], &cpu_child, sizeof(cpu_child)) != sizeof(cpu_child)) Die("read");
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (r > 0) rates.push_back(cfg.bytes / s / 1e9);
  }
  const double cpu_self = CpuSeconds(RUSAGE_SELF) - cpu_self0;
  close(go[1]);
  waitpid(pid, nullptr, 0);
  close(a), close(b), close(lfd), close(go[0]), close(done[0]), close(done[1]);
  std::sort(rates.begin(), rates.end());
  const double moved_gb =
      static_cast<double>(cfg.bytes) * cfg.reps * (mode == Mode::kOneWay ? 1 : 2) / 1e9;
  return {rates.back(), rates[rates.size() / 2], (cpu_self + cpu_child) / moved_gb};
}

}  // namespace

int main(int argc, char** argv) {
  Config cfg;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&] { return i + 1 < argc ? std::strtod(argv[++i], nullptr) : -1.0; };
    if (a == "--mib") cfg.bytes = static_cast<size_t>(next() * (1 << 20));
    else if (a == "--chunk-kib") cfg.chunk = static_cast<size_t>(next() * 1024);
    else if (a == "--buffer-bytes") cfg.buffer_bytes = static_cast<int>(next());
    else if (a == "--reps") cfg.reps = static_cast<int>(next());
    else if (a == "--json") cfg.json = true;
    else {
      std::fprintf(stderr, "usage: %s [--mib N] [--chunk-kib K] [--buffer-bytes B] [--reps R] [--json]\n",
                   argv[0]);
      return 2;
    }
  }
  if (cfg.bytes < 4096 || cfg.chunk < 1 || cfg.reps < 1 || cfg.buffer_bytes < 0) {
    std::fprintf(stderr, "tcp_stream: need --mib >= 1/256, --chunk-kib > 0, --reps >= 1, --buffer-bytes >= 0\n");
    return 2;
  }
  const struct {
    Mode mode;
    const char* name;
    const char* what;
  } kModes[] = {{Mode::kOneWay, "one-way", "A sends N, B receives"},
                {Mode::kDuplex, "duplex", "A and B each send N to the other; send + recv threads"},
                {Mode::kDuplexPoll, "duplex-poll", "same exchange, one poll() thread per process"}};
  if (!cfg.json) {
    std::printf("loopback TCP, 2 processes, %zu MiB per direction per rep, %zu KiB per call, %s\n",
                cfg.bytes >> 20, cfg.chunk >> 10,
                cfg.buffer_bytes ? ("SO_SND/RCVBUF " + std::to_string(cfg.buffer_bytes)).c_str()
                                 : "autotuned buffers");
    std::printf("%-12s | %-10s | %-12s | %-14s | %s\n", "mode", "best GB/s", "median GB/s",
                "CPU s per GB", "what (GB/s are per direction)");
  }
  for (const auto& m : kModes) {
    Result r = Measure(m.mode, cfg);
    if (cfg.json) {
      std::printf("{\"bench\": \"tcp_stream\", \"workload\": \"%s\", \"metric\": \"GBps_per_direction\", "
                  "\"ours\": %.4f, \"median\": %.4f, \"cpu_s_per_GB\": %.3f}\n",
                  m.name, r.best_gbps, r.median_gbps, r.cpu_s_per_gb);
    } else {
      std::printf("%-12s | %10.2f | %12.2f | %14.3f | %s\n", m.name, r.best_gbps, r.median_gbps,
                  r.cpu_s_per_gb, m.what);
    }
    std::fflush(stdout);
  }
  return 0;
}
