// Harness of the exact-recovery test: a dev Ceph cluster (reused from $GANTRY_CEPH_URI when
// scripts/test.sh started one, else scripts/ceph-dev.sh start/stop in a temp dir), a
// `gantry up` local cluster, commands run with a deadline, and a watchdog that stops both if
// the test process dies without its teardown. Every process is ended by its PID.
#pragma once

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "gantry_config.h"

namespace gantry::testing {

using std::chrono::milliseconds;
using std::chrono::seconds;

struct CommandResult {
  int exit_code = -1;  // -1: could not run or killed at the deadline
  std::string output;  // stdout + stderr
};

// Runs argv (argv[0] on PATH or a path) to completion or the deadline (then SIGKILL by PID).
inline CommandResult RunCommand(const std::vector<std::string>& argv, seconds timeout) {
  CommandResult r;
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) return r;
  const pid_t pid = fork();
  if (pid == 0) {
    dup2(fds[1], 1);
    dup2(fds[1], 2);
    std::vector<char*> a;
    for (const auto& s : argv) a.push_back(const_cast<char*>(s.c_str()));
    a.push_back(nullptr);
    execvp(a[0], a.data());
    _exit(127);
  }
  close(fds[1]);
  const auto end = std::chrono::steady_clock::now() + timeout;
  char buf[4096];
  while (true) {
    const auto left = std::chrono::duration_cast<milliseconds>(end - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      kill(pid, SIGKILL);
      r.output += "\n[killed after " + std::to_string(timeout.count()) + " s]";
      break;
    }
    pollfd p{fds[0], POLLIN, 0};
    if (poll(&p, 1, int(std::min<int64_t>(left.count(), 200))) <= 0) continue;
    const ssize_t n = read(fds[0], buf, sizeof(buf));
    if (n <= 0) break;
    r.output.append(buf, size_t(n));
  }
  close(fds[0]);
  int ws = 0;
  waitpid(pid, &ws, 0);
  if (WIFEXITED(ws) && r.output.find("[killed after") == std::string::npos)
    r.exit_code = WEXITSTATUS(ws);
  return r;
}

// Starts `cmd` in a new session that runs it once this process is gone (crash, ctest kill).
// Returns the watchdog's PID; kill it (StopWatchdog) once the normal teardown has run.
inline pid_t StartWatchdog(const std::string& cmd) {
  const std::string parent = std::to_string(getpid());
  const pid_t pid = fork();
  if (pid == 0) {
    setsid();
    const int devnull = open("/dev/null", O_RDWR);
    dup2(devnull, 0);
    dup2(devnull, 1);
    dup2(devnull, 2);
    const std::string script =
        "while kill -0 " + parent + " 2>/dev/null; do sleep 1; done; " + cmd;
    execl("/bin/bash", "bash", "-c", script.c_str(), nullptr);
    _exit(127);
  }
  return pid;
}
inline void StopWatchdog(pid_t pid) {
  if (pid <= 0) return;
  kill(pid, SIGKILL);
  waitpid(pid, nullptr, 0);
}

// The dev Ceph cluster: `uri` is GANTRY_CEPH_URI ("ceph://pool/?conf=..&id=..&keyring=..").
class CephDev {
 public:
  // Reuses $GANTRY_CEPH_URI, or starts scripts/ceph-dev.sh in a temp dir (and exports its
  // environment into this process so child processes see CEPH_CONF etc.). Empty `error` = ok.
  void Start(std::string* error) {
    if (const char* u = std::getenv("GANTRY_CEPH_URI"); u && *u) {
      uri_ = u;
      return;
    }
    char tmpl[] = "/tmp/gantry-recovery-ceph.XXXXXX";
    if (!mkdtemp(tmpl)) {
      *error = "mkdtemp for the Ceph dir failed";
      return;
    }
    dir_ = tmpl;
    watchdog_ = StartWatchdog("bash " + Script() + " stop " + dir_);
    CommandResult r = RunCommand({"bash", Script(), "start", dir_}, seconds(120));
    if (r.exit_code != 0) {
      *error = "scripts/ceph-dev.sh start " + dir_ + " failed:\n" + r.output;
      return;
    }
    std::string line;
    for (size_t p = 0; p < r.output.size();) {
      size_t q = r.output.find('\n', p);
      if (q == std::string::npos) q = r.output.size();
      line = r.output.substr(p, q - p);
      p = q + 1;
      if (line.rfind("export ", 0) != 0) continue;
      const size_t eq = line.find('=');
      std::string k = line.substr(7, eq - 7), v = line.substr(eq + 1);
      if (v.size() >= 2 && v.front() == '\'' && v.back() == '\'') v = v.substr(1, v.size() - 2);
      setenv(k.c_str(), v.c_str(), 1);
      if (k == "GANTRY_CEPH_URI") uri_ = v;
    }
    if (uri_.empty()) *error = "ceph-dev.sh printed no GANTRY_CEPH_URI:\n" + r.output;
  }
  // Stops the cluster this object started (never a reused one).
  void Stop() {
    if (dir_.empty()) return;
    RunCommand({"bash", Script(), "stop", dir_}, seconds(60));
    StopWatchdog(watchdog_);
    watchdog_ = -1;
    dir_.clear();
  }
  ~CephDev() { Stop(); }
  bool started_here() const { return !dir_.empty(); }
  // ceph://pool/<prefix>?query
  std::string Uri(const std::string& prefix) const {
    const size_t q = uri_.find('?');
    std::string base = uri_.substr(0, q), query = q == std::string::npos ? "" : uri_.substr(q);
    if (base.back() != '/') base += '/';
    return base + prefix + query;
  }

 private:
  static std::string Script() { return std::string(GANTRY_SOURCE_DIR) + "/scripts/ceph-dev.sh"; }
  std::string uri_, dir_;
  pid_t watchdog_ = -1;
};

// `gantry up --workers N` in `dir` (coordinator + workers as its children, on 127.0.0.1).
class GantryUp {
 public:
  // Empty `error` = up: the endpoint file exists (workers registered: `up` waits for that).
  void Start(const std::string& gantry, const std::filesystem::path& dir, int workers,
             int cpus_per_worker, std::string* error) {
    dir_ = dir;
    const std::string log = (dir / "up.log").string();
    const std::vector<std::string> argv = {
        gantry, "up", "--workers", std::to_string(workers), "--dir", (dir / "cluster").string(),
        "--port", "0", "--cpus-per-worker", std::to_string(cpus_per_worker),
        "--gpus-per-worker", "0"};
    pid_ = fork();
    if (pid_ == 0) {
      const int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      dup2(fd, 1);
      dup2(fd, 2);
      std::vector<char*> a;
      for (const auto& s : argv) a.push_back(const_cast<char*>(s.c_str()));
      a.push_back(nullptr);
      execv(a[0], a.data());
      _exit(127);
    }
    watchdog_ = StartWatchdog("kill -TERM " + std::to_string(pid_));
    const auto end = std::chrono::steady_clock::now() + seconds(40);
    while (std::chrono::steady_clock::now() < end) {
      if (ReadLog().find("local cluster up") != std::string::npos) {
        std::ifstream in(dir / "cluster" / "coordinator");
        std::getline(in, endpoint_);
        if (!endpoint_.empty()) return;
      }
      if (waitpid(pid_, nullptr, WNOHANG) == pid_) {
        pid_ = -1;
        *error = "gantry up exited:\n" + ReadLog();
        return;
      }
      std::this_thread::sleep_for(milliseconds(100));
    }
    *error = "gantry up not ready after 40 s:\n" + ReadLog();
  }
  // SIGTERM (up stops coordinator and workers, workers stop ranks), SIGKILL after 15 s.
  void Stop() {
    if (pid_ > 0) {
      kill(pid_, SIGTERM);
      bool gone = false;
      for (int i = 0; i < 300 && !gone; ++i) {
        gone = waitpid(pid_, nullptr, WNOHANG) == pid_;
        if (!gone) std::this_thread::sleep_for(milliseconds(50));
      }
      if (!gone) {
        kill(pid_, SIGKILL);
        waitpid(pid_, nullptr, 0);
      }
      pid_ = -1;
    }
    StopWatchdog(watchdog_);
    watchdog_ = -1;
  }
  ~GantryUp() { Stop(); }
  const std::string& endpoint() const { return endpoint_; }
  std::string ReadLog() const {
    std::ifstream in(dir_ / "up.log");
    return std::string(std::istreambuf_iterator<char>(in), {});
  }

 private:
  std::filesystem::path dir_;
  pid_t pid_ = -1, watchdog_ = -1;
  std::string endpoint_;
};

}  // namespace gantry::testing
