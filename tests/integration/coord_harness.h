// Test harness for coordinator integration tests: starts the real `gantry coordinator` and
// `gantry worker` processes on loopback (fast heartbeats), talks to them with the real client,
// and stops every process it started, by PID.
#pragma once

#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "coordinator/client.h"

namespace gantry::testing {

inline int FreeLoopbackPort() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(a);
  bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a));
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  close(fd);
  return ntohs(a.sin_port);
}

// Polls the coordinator every `poll` until the job's state is one of `states` or `timeout`
// passes; returns the last info it got.
inline proto::JobInfo WaitJobState(coordinator::CoordinatorClient& c, const std::string& id,
                                   const std::vector<std::string>& states,
                                   std::chrono::milliseconds timeout,
                                   std::chrono::milliseconds poll) {
  proto::JobInfo last;
  const auto end = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < end) {
    auto info = c.GetJob(id, true);
    if (info.ok()) {
      last = *info;
      for (const auto& s : states)
        if (last.state() == s) return last;
    }
    std::this_thread::sleep_for(poll);
  }
  return last;
}

class Cluster {
 public:
  explicit Cluster(const std::string& name) {
    dir_ = std::filesystem::temp_directory_path() /
           ("gantry-" + name + "-" + std::to_string(getpid()));
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    port_ = FreeLoopbackPort();
    endpoint_ = "tcp://127.0.0.1:" + std::to_string(port_);
  }
  ~Cluster() {
    for (auto& [name, pid] : procs_) Stop(name);
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  // `extra` env entries ("K=V") and args. Output goes to <dir>/<name>.log.
  pid_t Spawn(const std::string& name, std::vector<std::string> args,
              std::vector<std::string> env_extra = {}, const std::string& prefix_cmd = "") {
    const std::string log = (dir_ / (name + ".log")).string();
    std::vector<std::string> argv;
    if (!prefix_cmd.empty()) {
      std::string w;
      for (char c : prefix_cmd + " ") {
        if (c == ' ') {
          if (!w.empty()) argv.push_back(w);
          w.clear();
        } else {
          w += c;
        }
      }
    }
    argv.push_back(GANTRY_BINARY);
    argv.insert(argv.end(), args.begin(), args.end());
    const pid_t pid = fork();
    if (pid == 0) {
      const int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
      dup2(fd, 1);
      dup2(fd, 2);
      for (auto& e : env_extra) putenv(e.data());
      std::vector<char*> cargv;
      for (auto& a : argv) cargv.push_back(a.data());
      cargv.push_back(nullptr);
      execvp(cargv[0], cargv.data());
      _exit(127);
    }
    procs_[name] = pid;
    return pid;
  }
  pid_t StartCoordinator(std::vector<std::string> extra = {}, std::vector<std::string> env = {}) {
    std::vector<std::string> args = {
        "coordinator",    "--bind", endpoint_,      "--dir", (dir_ / "state").string(),
        "--heartbeat-ms", "200",    "--lost-after", "5"};
    args.insert(args.end(), extra.begin(), extra.end());
    return Spawn("coordinator", args, env);
  }
  pid_t StartWorker(const std::string& id, int cpus = 2, std::vector<std::string> extra = {},
                    const std::string& prefix_cmd = "") {
    std::vector<std::string> args = {
        "worker", "--coordinator",     endpoint_, "--id", id, "--dir", (dir_ / id).string(),
        "--cpus", std::to_string(cpus)};
    args.insert(args.end(), extra.begin(), extra.end());
    return Spawn(id, args, {}, prefix_cmd);
  }
  // SIGTERM, then SIGKILL after 5 s; reaps.
  void Stop(const std::string& name) {
    auto it = procs_.find(name);
    if (it == procs_.end() || it->second <= 0) return;
    const pid_t pid = it->second;
    kill(pid, SIGTERM);
    for (int i = 0; i < 250; ++i) {
      if (waitpid(pid, nullptr, WNOHANG) == pid) {
        it->second = 0;
        return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    kill(pid, SIGKILL);
    waitpid(pid, nullptr, 0);
    it->second = 0;
  }
  void Kill9(const std::string& name) {
    auto it = procs_.find(name);
    if (it == procs_.end() || it->second <= 0) return;
    kill(it->second, SIGKILL);
    waitpid(it->second, nullptr, 0);
    it->second = 0;
  }
  std::unique_ptr<coordinator::CoordinatorClient> Client(const std::string& token = "",
                                                         int timeout_ms = 3000) {
    wire::ChannelOptions o;
    o.endpoint = endpoint_;
    o.timeout = std::chrono::milliseconds(timeout_ms);
    o.token = token;
    auto c = coordinator::CoordinatorClient::Connect(o);
    EXPECT_TRUE(c.ok()) << c.status().ToString();
    return std::move(c).value();
  }
  // Waits until `n` workers are READY.
  bool WaitWorkers(int n, std::chrono::seconds timeout = std::chrono::seconds(15)) {
    auto c = Client("", 500);
    const auto end = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < end) {
      auto w = c->Workers();
      int ready = 0;
      if (w.ok())
        for (const auto& x : w->workers()) ready += x.state() == "READY";
      if (ready >= n) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return false;
  }
  // Polls until the job's state is one of `states`; returns the last info.
  proto::JobInfo WaitState(coordinator::CoordinatorClient& c, const std::string& id,
                           std::vector<std::string> states,
                           std::chrono::seconds timeout = std::chrono::seconds(30)) {
    return WaitJobState(c, id, states, timeout, std::chrono::milliseconds(50));
  }
  std::string Logs(coordinator::CoordinatorClient& c, const std::string& id) {
    auto b = c.Logs(id, -1, 0, 10000);
    std::string out;
    if (b.ok())
      for (const auto& r : b->records()) out += std::to_string(r.rank()) + ": " + r.text() + "\n";
    return out;
  }
  std::string ReadLog(const std::string& name) {
    std::ifstream in(dir_ / (name + ".log"));
    return std::string(std::istreambuf_iterator<char>(in), {});
  }
  const std::string& endpoint() const { return endpoint_; }
  std::filesystem::path dir() const { return dir_; }
  int port() const { return port_; }

 private:
  std::filesystem::path dir_;
  int port_;
  std::string endpoint_;
  std::map<std::string, pid_t> procs_;
};

// Whether any of the job's events has a reason containing `text`.
inline bool HasEventReason(const proto::JobInfo& info, const std::string& text) {
  for (const auto& e : info.events()) {
    if (e.reason().find(text) != std::string::npos) return true;
  }
  return false;
}

// Milliseconds between the first event matching (state, attempt) pairs, -1 if missing.
inline int64_t EventGapMs(const proto::JobInfo& info, const std::string& from_state,
                          int from_attempt, const std::string& to_state, int to_attempt) {
  int64_t a = -1, b = -1;
  for (const auto& e : info.events()) {
    if (a < 0 && e.state() == from_state && e.attempt() == from_attempt) a = e.time_ms();
    if (b < 0 && e.state() == to_state && e.attempt() == to_attempt) b = e.time_ms();
  }
  return a < 0 || b < 0 ? -1 : b - a;
}

inline std::string CommandJob(const std::string& name, int ranks, const std::string& script,
                              int max_restarts = 0, const std::string& extra = "") {
  std::string s = "name: " + name + "\nkind: command\nresources: {ranks: " + std::to_string(ranks) +
                  ", cpus_per_rank: 1}\ncommand:\n  argv: [\"/bin/sh\", "
                  "\"-c\", '" +
                  script + "']\nrestarts: {max: " + std::to_string(max_restarts) + "}\n" + extra;
  return s;
}

}  // namespace gantry::testing
