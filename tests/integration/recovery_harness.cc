// Harness of the exact-recovery test (recovery_harness.h): processes with deadlines, the dev
// Ceph cluster, `gantry up`, and the watchdog that cleans up after a crashed test.
#include "tests/integration/recovery_harness.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <thread>

#include "gantry_config.h"

namespace gantry::testing {
namespace {

std::string CephDevScript() { return std::string(GANTRY_SOURCE_DIR) + "/scripts/ceph-dev.sh"; }

// Exports the `export K=V` / `export K='V'` lines of ceph-dev.sh; returns GANTRY_CEPH_URI.
std::string ExportEnvLines(const std::string& text) {
  std::string uri;
  for (size_t p = 0; p < text.size();) {
    size_t q = text.find('\n', p);
    if (q == std::string::npos) q = text.size();
    const std::string line = text.substr(p, q - p);
    p = q + 1;
    const size_t eq = line.find('=');
    if (line.rfind("export ", 0) != 0 || eq == std::string::npos) continue;
    std::string k = line.substr(7, eq - 7), v = line.substr(eq + 1);
    if (v.size() >= 2 && v.front() == '\'' && v.back() == '\'') v = v.substr(1, v.size() - 2);
    setenv(k.c_str(), v.c_str(), 1);
    if (k == "GANTRY_CEPH_URI") uri = v;
  }
  return uri;
}

}  // namespace

CommandResult RunCommand(const std::vector<std::string>& argv, seconds timeout) {
  CommandResult r;
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) return r;
  std::vector<char*> args;
  for (const auto& s : argv) args.push_back(const_cast<char*>(s.c_str()));
  args.push_back(nullptr);
  const pid_t pid = fork();
  if (pid == 0) {
    dup2(fds[1], 1);
    dup2(fds[1], 2);
    execvp(args[0], args.data());
    _exit(127);
  }
  close(fds[1]);
  const auto end = std::chrono::steady_clock::now() + timeout;
  bool killed = false;
  char buf[4096];
  while (true) {
    const auto left =
        std::chrono::duration_cast<milliseconds>(end - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      kill(pid, SIGKILL);
      killed = true;
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
  if (!killed && WIFEXITED(ws)) r.exit_code = WEXITSTATUS(ws);
  return r;
}

pid_t StartWatchdog(const std::string& cmd) {
  const std::string script = "while kill -0 " + std::to_string(getpid()) +
                             " 2>/dev/null; do sleep 1; done; " + cmd;
  const pid_t pid = fork();
  if (pid == 0) {
    setsid();
    const int devnull = open("/dev/null", O_RDWR);
    dup2(devnull, 0);
    dup2(devnull, 1);
    dup2(devnull, 2);
    execl("/bin/bash", "bash", "-c", script.c_str(), nullptr);
    _exit(127);
  }
  return pid;
}

void StopWatchdog(pid_t pid) {
  if (pid <= 0) return;
  kill(pid, SIGKILL);
  waitpid(pid, nullptr, 0);
}

void CephDev::Start(std::string* error) {
  if (const char* u = std::getenv("GANTRY_CEPH_URI"); u && *u) {
    uri_ = u;
    return;
  }
  char tmpl[] = "/tmp/gantry-recovery-ceph.XXXXXX";
  if (!mkdtemp(tmpl)) {
    *error = "mkdtemp /tmp/gantry-recovery-ceph.XXXXXX failed: is /tmp writable?";
    return;
  }
  dir_ = tmpl;
  watchdog_ = StartWatchdog("bash " + CephDevScript() + " stop " + dir_);
  const CommandResult r = RunCommand({"bash", CephDevScript(), "start", dir_}, seconds(120));
  if (r.exit_code != 0) {
    *error = "scripts/ceph-dev.sh start " + dir_ + " failed:\n" + r.output;
    return;
  }
  uri_ = ExportEnvLines(r.output);
  if (uri_.empty()) *error = "scripts/ceph-dev.sh printed no GANTRY_CEPH_URI:\n" + r.output;
}

void CephDev::Stop() {
  if (dir_.empty()) return;
  RunCommand({"bash", CephDevScript(), "stop", dir_}, seconds(60));
  StopWatchdog(watchdog_);
  watchdog_ = -1;
  dir_.clear();
}

std::string CephDev::Uri(const std::string& prefix) const {
  const size_t q = uri_.find('?');
  std::string base = uri_.substr(0, q);
  const std::string query = q == std::string::npos ? "" : uri_.substr(q);
  if (base.empty() || base.back() != '/') base += '/';
  return base + prefix + query;
}

void GantryUp::Start(const std::string& gantry, const std::filesystem::path& dir, int workers,
                     int cpus_per_worker, std::string* error) {
  dir_ = dir;
  const std::string log = (dir / "up.log").string();
  const std::vector<std::string> argv = {
      gantry,   "up",   "--workers", std::to_string(workers), "--dir", (dir / "cluster").string(),
      "--port", "0",    "--cpus-per-worker", std::to_string(cpus_per_worker),
      "--gpus-per-worker", "0"};
  std::vector<char*> args;
  for (const auto& s : argv) args.push_back(const_cast<char*>(s.c_str()));
  args.push_back(nullptr);
  pid_ = fork();
  if (pid_ == 0) {
    const int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    dup2(fd, 1);
    dup2(fd, 2);
    execv(args[0], args.data());
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

void GantryUp::Stop() {
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

std::string GantryUp::ReadLog() const {
  std::ifstream in(dir_ / "up.log");
  return std::string(std::istreambuf_iterator<char>(in), {});
}

}  // namespace gantry::testing
