// Launch: fork/exec of the rank processes, output collection and bounded waits.
#include "bench/allreduce_bench/launch.h"

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <sstream>

namespace gantry::bench {
namespace {

using Clock = std::chrono::steady_clock;
// After one process fails, the others get this long to report their own error and exit.
constexpr double kGraceS = 3.0;
// mpirun forwards SIGTERM to its ranks and cleans up; SIGKILL follows after this.
constexpr double kTermGraceS = 2.0;

double Since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

pid_t Spawn(const Impl& impl, int rank, int world, int port, int out_fd, int read_fd) {
  pid_t pid = fork();
  if (pid != 0) return pid;
  setpgid(0, 0);  // own group: stopping it also stops what it started (mpirun's ranks)
  if (impl.pin) {
    cpu_set_t cpus;
    CPU_ZERO(&cpus);
    CPU_SET(rank % std::max(1L, sysconf(_SC_NPROCESSORS_ONLN)), &cpus);
    sched_setaffinity(0, sizeof(cpus), &cpus);
  }
  dup2(out_fd, 1);
  dup2(out_fd, 2);
  close(read_fd);
  setenv("RANK", std::to_string(rank).c_str(), 1);
  setenv("WORLD_SIZE", std::to_string(world).c_str(), 1);
  setenv("MASTER_ADDR", "127.0.0.1", 1);
  setenv("MASTER_PORT", std::to_string(port).c_str(), 1);
  for (auto& [k, v] : impl.env) setenv(k.c_str(), v.c_str(), 1);
  std::vector<char*> argv;
  for (auto& a : impl.argv) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  execvp(argv[0], argv.data());
  std::fprintf(stderr, "exec %s failed\n", argv[0]);
  _exit(127);
}

std::string Describe(int status) {
  if (WIFEXITED(status)) return "exited with code " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return "was killed by signal " + std::to_string(WTERMSIG(status));
  return "stopped";
}

// Stops every still-running process group (SIGTERM, then SIGKILL) and reaps the leaders.
void StopAll(std::vector<pid_t>& pids) {
  for (pid_t p : pids) {
    if (p > 0) kill(-p, SIGTERM);
  }
  const auto t = Clock::now();
  for (;;) {
    bool live = false;
    for (pid_t& p : pids) {
      if (p > 0 && waitpid(p, nullptr, WNOHANG) == p) p = -1;
      live = live || p > 0;
    }
    if (!live || Since(t) > kTermGraceS) break;
    usleep(20000);
  }
  for (pid_t& p : pids) {
    if (p <= 0) continue;
    kill(-p, SIGKILL);
    waitpid(p, nullptr, 0);
    p = -1;
  }
}

std::map<size_t, double> ParseResults(const std::string& text) {
  std::map<size_t, double> out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    size_t bytes;
    double s;
    if (std::sscanf(line.c_str(), "RESULT %zu %lf", &bytes, &s) == 2) out[bytes] = s;
  }
  return out;
}

}  // namespace

LaunchResult Launch(const Impl& impl, int procs, int world, int port, double timeout_s) {
  LaunchResult res;
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) {
    res.error = "pipe() failed";
    return res;
  }
  const auto start = Clock::now();
  std::vector<pid_t> pids;
  for (int r = 0; r < procs; ++r) pids.push_back(Spawn(impl, r, world, port, fds[1], fds[0]));
  close(fds[1]);
  fcntl(fds[0], F_SETFL, O_NONBLOCK);
  std::string text;
  char buf[4096];
  double failed_at = -1;
  for (int live = procs; live > 0;) {
    pollfd p{fds[0], POLLIN, 0};
    if (poll(&p, 1, 100) > 0) {
      for (ssize_t n; (n = read(fds[0], buf, sizeof(buf))) > 0;) text.append(buf, n);
    }
    for (int r = 0; r < procs; ++r) {
      int status = 0;
      if (pids[r] <= 0 || waitpid(pids[r], &status, WNOHANG) != pids[r]) continue;
      pids[r] = -1;
      --live;
      if (WIFEXITED(status) && WEXITSTATUS(status) == 0) continue;
      if (res.error.empty()) res.error = "process " + std::to_string(r) + " " + Describe(status);
      if (failed_at < 0) failed_at = Since(start);
    }
    if (failed_at >= 0 && live > 0 && Since(start) - failed_at > kGraceS) {
      res.error += "; stopped the other processes " + std::to_string(static_cast<int>(kGraceS)) +
                   " s later";
      break;
    }
    if (live > 0 && Since(start) > timeout_s) {
      res.error = "timed out after " + std::to_string(static_cast<int>(timeout_s)) +
                  " s (a rank is stuck); stopped every process";
      break;
    }
  }
  StopAll(pids);
  for (ssize_t n; (n = read(fds[0], buf, sizeof(buf))) > 0;) text.append(buf, n);
  close(fds[0]);
  res.seconds = ParseResults(text);
  res.wall_s = Since(start);
  if (!res.error.empty()) {
    // Keep the processes' last words: what they said explains the failure.
    std::string tail = text.size() > 1500 ? text.substr(text.size() - 1500) : text;
    std::fprintf(stderr, "%s: %s; output tail:\n%s\n", impl.name.c_str(), res.error.c_str(),
                 tail.c_str());
  }
  return res;
}

}  // namespace gantry::bench
