// Starts N real rank processes of comm_test_worker on loopback (fork/exec, torchrun-style env)
// and collects their exit codes and output. Every process is stopped by PID, also on timeout.
#pragma once

#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <map>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace gantry::comm::testing {

struct RankResult {
  int exit_code = -1;   // -1 killed by signal / not finished
  std::string output;   // stdout + stderr
  double exit_after_s = 0;  // seconds from launch to exit
};

// A free TCP port on 127.0.0.1 (bind to 0, read it, release it).
inline int FreePort() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a));
  socklen_t len = sizeof(a);
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  int port = ntohs(a.sin_port);
  close(fd);
  return port;
}

class RankGroup {
 public:
  // argv_prefix: e.g. {"ip", "netns", "exec", "ns0"} per rank (empty = none).
  RankGroup(const std::string& binary, int world, const std::vector<std::string>& args,
            std::map<std::string, std::string> env,
            std::vector<std::vector<std::string>> prefixes = {},
            std::vector<std::map<std::string, std::string>> rank_env = {}) : world_(world) {
    const int port = FreePort();
    start_ = std::chrono::steady_clock::now();
    for (int r = 0; r < world; ++r) {
      char path[] = "/tmp/gantry-comm-rank-XXXXXX";
      int out = mkstemp(path);
      logs_.push_back(path);
      std::vector<std::string> argv;
      if (!prefixes.empty()) argv = prefixes[r];
      argv.push_back(binary);
      argv.insert(argv.end(), args.begin(), args.end());
      std::map<std::string, std::string> e = env;
      if (!rank_env.empty()) {
        for (auto& [k, v] : rank_env[r]) e[k] = v;
      }
      // A rank given JOB_COMPLETION_INDEX (a Kubernetes Indexed Job) gets no RANK either.
      if (!e.count("JOB_COMPLETION_INDEX")) e["RANK"] = std::to_string(r);
      e["WORLD_SIZE"] = std::to_string(world);
      if (!e.count("MASTER_ADDR")) e["MASTER_ADDR"] = "127.0.0.1";
      e["MASTER_PORT"] = std::to_string(port);
      pid_t pid = fork();
      if (pid == 0) {
        dup2(out, 1);
        dup2(out, 2);
        for (auto& [k, v] : e) setenv(k.c_str(), v.c_str(), 1);
        std::vector<char*> cargv;
        for (auto& a : argv) cargv.push_back(a.data());
        cargv.push_back(nullptr);
        execvp(cargv[0], cargv.data());
        _exit(127);
      }
      close(out);
      pids_.push_back(pid);
    }
    results_.resize(world);
  }

  ~RankGroup() {
    for (pid_t p : pids_) {
      if (p > 0) kill(p, SIGKILL);
    }
    for (pid_t p : pids_) {
      if (p > 0) waitpid(p, nullptr, 0);
    }
    for (auto& l : logs_) unlink(l.c_str());
  }

  pid_t pid(int rank) const { return pids_[rank]; }
  // Sends `sig` to one live rank (SIGSTOP/SIGCONT to make it a straggler).
  void Signal(int rank, int sig) const {
    if (pids_[rank] > 0) kill(pids_[rank], sig);
  }
  // Kills one rank with SIGKILL and reaps it.
  void Kill(int rank) {
    kill(pids_[rank], SIGKILL);
    waitpid(pids_[rank], nullptr, 0);
    results_[rank].exit_code = -1;
    results_[rank].exit_after_s = Seconds();
    pids_[rank] = -1;
  }
  // Output so far of one rank.
  std::string Output(int rank) const {
    std::ifstream f(logs_[rank]);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
  }
  // Waits for every live rank (SIGKILLs the rest after timeout_s).
  std::vector<RankResult> Wait(double timeout_s) {
    int live = 0;
    for (pid_t p : pids_) live += p > 0;
    while (live > 0) {
      for (int r = 0; r < world_; ++r) {
        if (pids_[r] <= 0) continue;
        int status = 0;
        if (waitpid(pids_[r], &status, WNOHANG) == pids_[r]) {
          results_[r].exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
          results_[r].exit_after_s = Seconds();
          pids_[r] = -1;
          --live;
        }
      }
      if (live == 0) break;
      if (Seconds() > timeout_s) {
        for (int r = 0; r < world_; ++r) {
          if (pids_[r] > 0) {
            kill(pids_[r], SIGKILL);
            waitpid(pids_[r], nullptr, 0);
            pids_[r] = -1;
          }
        }
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    for (int r = 0; r < world_; ++r) results_[r].output = Output(r);
    return results_;
  }
  // Polls the ranks' output until every one has printed `marker` (false after `limit`).
  bool WaitForAll(const std::string& marker, std::chrono::seconds limit) const {
    const auto until = std::chrono::steady_clock::now() + limit;
    while (std::chrono::steady_clock::now() < until) {
      int ready = 0;
      for (int r = 0; r < world_; ++r) ready += Output(r).find(marker) != std::string::npos;
      if (ready == world_) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return false;
  }

  double Seconds() const {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  }

 private:
  int world_;
  std::chrono::steady_clock::time_point start_;
  std::vector<pid_t> pids_;
  std::vector<std::string> logs_;
  std::vector<RankResult> results_;
};

// GET http://127.0.0.1:port/path (3 s receive timeout): the raw response, "" when nothing
// answered.
inline std::string HttpGet(int port, const std::string& path) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  timeval tv{3, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  std::string out;
  if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0) {
    const std::string req = "GET " + path + " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    (void)!write(fd, req.data(), req.size());
    char buf[4096];
    ssize_t n;
    while ((n = read(fd, buf, sizeof(buf))) > 0) out.append(buf, n);
  }
  close(fd);
  return out;
}

// For a group started with {"loop"} and GANTRY_COMM_TIMEOUT_S = timeout_s: waits until every
// rank is in its allreduce loop, lets a few ops run, kill -9s `victim`, and checks that every
// survivor exits with a comm error naming the 64 MiB allreduce, a rank and the time waited,
// well before the timeout (the closed socket / exited pid is noticed directly). Returns the
// results for backend-specific checks (empty when the ranks never got going).
inline std::vector<RankResult> KillMidAllreduceAndCheckSurvivors(RankGroup& group, int world,
                                                                 int victim, double timeout_s) {
  if (!group.WaitForAll("READY", std::chrono::seconds(60))) {
    ADD_FAILURE() << "not every rank reached its allreduce loop";
    return {};
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  const double killed_at = group.Seconds();
  group.Kill(victim);
  auto results = group.Wait(timeout_s + 30);
  const std::regex named(R"(allreduce #\d+ \(f32 x 16777216, sum\).*rank \d+.*\d+\.\d+ s)");
  for (int r = 0; r < world; ++r) {
    if (r == victim) continue;
    SCOPED_TRACE("rank " + std::to_string(r) + " output:\n" + results[r].output);
    EXPECT_EQ(results[r].exit_code, 3);
    EXPECT_NE(results[r].output.find("COMM ERROR"), std::string::npos);
    EXPECT_TRUE(std::regex_search(results[r].output, named));
    EXPECT_LT(results[r].exit_after_s - killed_at, timeout_s / 2);
  }
  return results;
}

}  // namespace gantry::comm::testing
