// RankProcess: output relay, exit codes, stop, CPU pinning, and that a rank dies with its agent.
#include "worker/rank_process.h"

#include <gtest/gtest.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <thread>

#include "base/cpu_set.h"

namespace gantry::worker {
namespace {

using namespace std::chrono_literals;

// Polls until the process exits or `limit` passes; returns its exit line ("" while running).
std::string WaitExit(RankProcess& p, std::vector<OutputLine>& lines, std::chrono::seconds limit) {
  const auto until = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < until) {
    p.ReadOutput(lines);
    if (p.Poll()) {
      p.ReadOutput(lines);
      return p.exit_description();
    }
    std::this_thread::sleep_for(10ms);
  }
  return "";
}

TEST(RankProcess, RelaysOutputAndExitCode) {
  auto p = RankProcess::Start({{"/bin/sh", "-c", "echo out; echo err >&2; exit 3"}, {}, ""});
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  std::vector<OutputLine> lines;
  EXPECT_EQ(WaitExit(**p, lines, 10s), "exit 3");
  EXPECT_EQ((*p)->exit_code(), 3);
  ASSERT_EQ(lines.size(), 2u);
  for (const auto& l : lines) EXPECT_EQ(l.text, l.stream == "stdout" ? "out" : "err");
}

// Output lines reach the coordinator in protobuf string fields, which take UTF-8 only: a
// stray byte becomes U+FFFD instead of getting the whole batch refused, and a long line is
// split between characters, not inside one.
TEST(RankProcess, OutputLinesAreValidUtf8) {
  // A 4-byte character straddles the 16 KiB split point of a line still incomplete when read
  // (the rank pauses before its end).
  const std::string script =
      "printf 'ok \\377 bad\\n'; head -c 16382 /dev/zero | tr '\\0' a; "
      "printf '\\360\\237\\230\\200'; sleep 1; head -c 3614 /dev/zero | tr '\\0' b; echo";
  auto p = RankProcess::Start({{"/bin/sh", "-c", script}, {}, ""});
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  std::vector<OutputLine> lines;
  ASSERT_EQ(WaitExit(**p, lines, 10s), "exit 0");
  std::string sizes;
  for (const auto& l : lines) sizes += " " + l.stream + ":" + std::to_string(l.text.size());
  ASSERT_EQ(lines.size(), 3u) << sizes;
  EXPECT_EQ(lines[0].text, "ok \xEF\xBF\xBD bad");
  EXPECT_EQ(lines[1].text, std::string(16382, 'a'));
  EXPECT_EQ(lines[2].text, "\xF0\x9F\x98\x80" + std::string(3614, 'b'));
}

TEST(RankProcess, EnvironmentAndMissingProgram) {
  auto p = RankProcess::Start({{"/bin/sh", "-c", "echo $GANTRY_T"}, {{"GANTRY_T", "v1"}}, ""});
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  std::vector<OutputLine> lines;
  EXPECT_EQ(WaitExit(**p, lines, 10s), "exit 0");
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_EQ(lines[0].text, "v1");
  // A program that cannot run is Start's error, naming it and why (it was a bare exit 127).
  auto q = RankProcess::Start({{"/nonexistent/prog"}, {}, ""});
  ASSERT_FALSE(q.ok());
  EXPECT_NE(q.status().message().find("cannot execute /nonexistent/prog"), std::string::npos)
      << q.status().ToString();
  EXPECT_NE(q.status().message().find("No such file or directory"), std::string::npos)
      << q.status().ToString();
  char plain[] = "/tmp/gantry-not-executable-XXXXXX";  // mode 0600: no x bit
  const int fd = mkstemp(plain);
  ASSERT_GE(fd, 0);
  close(fd);
  auto not_exec = RankProcess::Start({{plain}, {}, ""});
  unlink(plain);
  ASSERT_FALSE(not_exec.ok());
  EXPECT_NE(not_exec.status().message().find("Permission denied"), std::string::npos)
      << not_exec.status().ToString();
  EXPECT_FALSE(RankProcess::Start({{}, {}, ""}).ok());
  // Only 0, 1 and 2 reach the rank (the /dev/null it got as stdin used to stay open too).
  auto fds = RankProcess::Start({{"/bin/sh", "-c", "ls /proc/self/fd | wc -l"}, {}, ""});
  ASSERT_TRUE(fds.ok()) << fds.status().ToString();
  lines.clear();
  EXPECT_EQ(WaitExit(**fds, lines, 10s), "exit 0");
  ASSERT_EQ(lines.size(), 1u);
  // ls's own directory descriptor is the fourth.
  EXPECT_EQ(lines[0].text, "4") << "descriptors leaked into the rank";
}

TEST(RankProcess, StopEscalatesToSigkill) {
  auto p = RankProcess::Start({{"/bin/sh", "-c", "trap '' TERM; echo ready; sleep 30"}, {}, ""});
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  std::vector<OutputLine> lines;
  for (int i = 0; i < 500 && lines.empty(); ++i) {
    (*p)->ReadOutput(lines);
    std::this_thread::sleep_for(10ms);
  }
  ASSERT_FALSE(lines.empty()) << "the shell never started";
  (*p)->Stop(200ms);
  EXPECT_EQ(WaitExit(**p, lines, 10s), "killed by SIGKILL");
}

// A Stop() right after Start() may reach the child before it has exec'd. With the agent's
// SIGTERM handler still installed there, the signal ran that handler in the child's copy and
// was lost: the rank ignored it and was SIGKILLed after the grace period. Signals are now
// blocked across fork until the child has reset its handlers, so it dies of the SIGTERM.
// This test process has a SIGTERM handler too (as the worker does), and repeats the race.
std::atomic<int> g_sigterms{0};
TEST(RankProcess, StopRightAfterStartEndsWithSigterm) {
  struct sigaction sa {}, old {};
  sa.sa_handler = [](int) { ++g_sigterms; };
  sigemptyset(&sa.sa_mask);
  ASSERT_EQ(sigaction(SIGTERM, &sa, &old), 0);
  for (int i = 0; i < 20; ++i) {
    auto p = RankProcess::Start({{"/bin/sleep", "30"}, {}, ""});
    ASSERT_TRUE(p.ok()) << p.status().ToString();
    (*p)->Stop(5s);
    std::vector<OutputLine> lines;
    ASSERT_EQ(WaitExit(**p, lines, 20s), "killed by SIGTERM") << "attempt " << i;
  }
  sigaction(SIGTERM, &old, nullptr);
  EXPECT_EQ(g_sigterms.load(), 0) << "the rank's SIGTERM reached this process";
}

// kill -9 of the agent must take its ranks with it. The test process becomes a child
// subreaper, so the orphaned rank is re-parented to it and can be reaped here.
TEST(RankProcess, DiesWithItsAgent) {
  ASSERT_EQ(prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  const pid_t agent = fork();
  ASSERT_GE(agent, 0);
  if (agent == 0) {  // the "agent": start a long rank, report its pid once it runs, then wait
    auto p = RankProcess::Start({{"/bin/sh", "-c", "echo up; exec sleep 60"}, {}, ""});
    pid_t pid = p.ok() ? (*p)->pid() : -1;
    std::vector<OutputLine> lines;  // past exec: PR_SET_PDEATHSIG is in force
    for (int i = 0; p.ok() && i < 1000 && lines.empty(); ++i) {
      (*p)->ReadOutput(lines);
      std::this_thread::sleep_for(10ms);
    }
    if (lines.empty()) pid = -1;
    (void)!write(fds[1], &pid, sizeof pid);
    for (;;) pause();
  }
  close(fds[1]);
  pid_t rank = -1;
  ASSERT_EQ(read(fds[0], &rank, sizeof rank), static_cast<ssize_t>(sizeof rank));
  close(fds[0]);
  ASSERT_GT(rank, 0) << "the agent could not start its rank";
  ASSERT_EQ(kill(agent, SIGKILL), 0);
  int st = 0;
  ASSERT_EQ(waitpid(agent, &st, 0), agent);
  pid_t got = 0;
  for (int i = 0; i < 1000 && got == 0; ++i) {  // up to 10 s
    got = waitpid(rank, &st, WNOHANG);
    if (got == 0) std::this_thread::sleep_for(10ms);
  }
  if (got == 0) {
    kill(rank, SIGKILL);
    waitpid(rank, &st, 0);
    FAIL() << "rank " << rank << " outlived its agent by 10 s";
  }
  ASSERT_EQ(got, rank);
  EXPECT_TRUE(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL) << "status " << st;
}

TEST(RankProcess, PinnedToItsCpusBeforeExec) {
  const StatusOr<std::vector<int>> allowed = AffinityCpus();
  ASSERT_TRUE(allowed.ok()) << allowed.status().ToString();
  ASSERT_FALSE(allowed->empty());
  const int cpu = allowed->back();
  LaunchSpec spec{{"/bin/sh", "-c", "grep Cpus_allowed_list /proc/self/status"}, {}, ""};
  spec.cpus = {cpu};
  auto p = RankProcess::Start(spec);
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  std::vector<OutputLine> lines;
  EXPECT_EQ(WaitExit(**p, lines, 10s), "exit 0");
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_EQ(lines[0].text, "Cpus_allowed_list:\t" + std::to_string(cpu));
  spec.cpus = {CPU_SETSIZE};
  auto bad = RankProcess::Start(spec);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("out of range"), std::string::npos);
}

}  // namespace
}  // namespace gantry::worker
