// Under mpirun (Open MPI, --allow-run-as-root --oversubscribe): the mpi backend through the
// conformance suite (2, 3 and 4 ranks; 64 MiB at 4), the tcp backend bootstrapped from MPI (no
// RANK/MASTER_* set), and a rank killed mid-allreduce ends the whole job instead of a hang.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <sstream>
#include <thread>
#include <vector>

#include "tests/integration/comm_launcher.h"

namespace gantry::comm::testing {
namespace {

const char kMpirunFlags[] =
    " --allow-run-as-root --oversubscribe --mca btl self,vader,tcp --mca btl_tcp_if_include lo ";

class CommMpirun : public ::testing::TestWithParam<std::tuple<std::string, int, bool>> {};

TEST_P(CommMpirun, ConformanceUnderMpirun) {
  const auto& [backend, world, big] = GetParam();
  if (std::system("mpirun --version >/dev/null 2>&1") != 0) GTEST_SKIP() << "mpirun not found";
  const std::string cmd = "GANTRY_COMM_BACKEND=" + backend +
                          " GANTRY_COMM_TIMEOUT_S=60 timeout -s KILL 170 mpirun -np " +
                          std::to_string(world) + kMpirunFlags +
                          "-x GANTRY_COMM_BACKEND -x GANTRY_COMM_TIMEOUT_S " GANTRY_COMM_TEST_WORKER
                          " conformance" +
                          (big ? " --big" : "") + " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  ASSERT_NE(p, nullptr);
  std::string out;
  char buf[4096];
  while (size_t n = fread(buf, 1, sizeof(buf), p)) out.append(buf, n);
  int status = pclose(p);
  EXPECT_EQ(status, 0) << out;
  size_t passes = 0;
  for (size_t pos = 0; (pos = out.find("PASS", pos)) != std::string::npos; ++pos) ++passes;
  EXPECT_EQ(passes, static_cast<size_t>(world)) << out;
  EXPECT_NE(out.find("(" + backend + ")"), std::string::npos) << out;
}

INSTANTIATE_TEST_SUITE_P(Backends, CommMpirun,
                         ::testing::Values(std::make_tuple("mpi", 2, false),
                                           std::make_tuple("mpi", 3, false),
                                           std::make_tuple("mpi", 4, true),
                                           std::make_tuple("tcp", 2, false)),
                         [](const auto& info) {
                           return std::get<0>(info.param) + "_" +
                                  std::to_string(std::get<1>(info.param)) +
                                  (std::get<2>(info.param) ? "_big" : "");
                         });

// A receive of fewer elements than the peer sent: MPI's own words for the error plus what it
// means, and the communicator is broken afterwards (it used to report "MPI_Test failed with
// code 15" and let the next allreduce succeed).
TEST(CommMpirunFailure, TruncatedReceiveNamesTheMismatchAndBreaksTheCommunicator) {
  if (std::system("mpirun --version >/dev/null 2>&1") != 0) GTEST_SKIP() << "mpirun not found";
  const std::string cmd =
      "GANTRY_COMM_BACKEND=mpi GANTRY_COMM_TIMEOUT_S=10 timeout -s KILL 60 mpirun -np 2" +
      std::string(kMpirunFlags) +
      "-x GANTRY_COMM_BACKEND -x GANTRY_COMM_TIMEOUT_S " GANTRY_COMM_TEST_WORKER
      " truncated-recv 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  ASSERT_NE(p, nullptr);
  std::string out;
  char buf[4096];
  while (size_t n = fread(buf, 1, sizeof(buf), p)) out.append(buf, n);
  pclose(p);
  EXPECT_NE(out.find("the ranks' counts differ"), std::string::npos) << out;
  EXPECT_NE(out.find("MISMATCH BROKE THE COMMUNICATOR"), std::string::npos) << out;
}

// Children of `pid` (the rank processes mpirun started on this host).
std::vector<pid_t> Children(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/task/" + std::to_string(pid) + "/children");
  std::vector<pid_t> out;
  for (pid_t c; f >> c;) out.push_back(c);
  return out;
}

// Runs 64 MiB allreduces on 2 ranks under mpirun, sends `sig` to rank 1 in the middle and
// returns mpirun's output once it ended (the test fails if it did not within 50 s).
std::string HurtRankUnderMpirun(int sig, int comm_timeout_s) {
  char log[] = "/tmp/gantry-mpirun-kill-XXXXXX";
  const int fd = mkstemp(log);
  EXPECT_GE(fd, 0);
  if (fd < 0) return "";
  const std::string cmd = std::string("exec mpirun -np 2") + kMpirunFlags +
                          "-x GANTRY_COMM_BACKEND=mpi -x GANTRY_COMM_TIMEOUT_S=" +
                          std::to_string(comm_timeout_s) + " " GANTRY_COMM_TEST_WORKER " loop";
  const auto start = std::chrono::steady_clock::now();
  const pid_t mpirun = fork();
  if (mpirun == 0) {
    dup2(fd, 1);
    dup2(fd, 2);
    execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  close(fd);
  auto output = [&] {
    std::ifstream f(log);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
  };
  auto seconds = [&] {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  };
  std::vector<pid_t> ranks;
  while (seconds() < 60) {
    const std::string out = output();
    ranks = Children(mpirun);
    if (out.find("READY rank 0") != std::string::npos &&
        out.find("READY rank 1") != std::string::npos && ranks.size() == 2) {
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_EQ(ranks.size(), 2u) << output();
  if (ranks.size() != 2) {
    kill(mpirun, SIGKILL);
    waitpid(mpirun, nullptr, 0);
    for (pid_t r : ranks) kill(r, SIGKILL);
    unlink(log);
    return "";
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // a few allreduces in flight
  const double killed_at = seconds();
  kill(ranks[1], sig);
  int status = 0;
  pid_t done = 0;
  while ((done = waitpid(mpirun, &status, WNOHANG)) == 0 && seconds() < killed_at + 50) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  if (done == 0) {
    kill(mpirun, SIGKILL);
    waitpid(mpirun, &status, 0);
  }
  const std::string out = output();
  unlink(log);
  EXPECT_NE(done, 0) << "mpirun still running 50 s after rank 1 got signal " << sig << ":\n"
                     << out;
  EXPECT_FALSE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << out;
  EXPECT_LT(seconds() - killed_at, 30.0) << out;
  // Both ranks are gone (given a moment to be reaped once mpirun is gone).
  for (pid_t r : ranks) {
    for (int i = 0; i < 250 && kill(r, 0) == 0; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    if (kill(r, 0) == 0) {
      ADD_FAILURE() << "rank pid " << r << " survived mpirun";
      kill(r, SIGKILL);
    }
  }
  return out;
}

// MPI reports no peer rank of its own, so "never hang" rests on mpirun: kill -9 one rank in the
// middle of 64 MiB allreduces and mpirun must end the job (non-zero, naming the dead process)
// long before the 60 s comm timeout.
TEST(CommMpirunFailure, KilledRankEndsTheJobInsteadOfHanging) {
  if (std::system("mpirun --version >/dev/null 2>&1") != 0) GTEST_SKIP() << "mpirun not found";
  const std::string out = HurtRankUnderMpirun(SIGKILL, 60);
  EXPECT_NE(out.find("exited on signal 9"), std::string::npos)
      << "mpirun should name the killed rank:\n" << out;
}

// A stalled rank (SIGSTOP: alive, never answering) is the comm timeout's case: the survivor's
// allreduce fails naming the operation, and the survivor then leaves without MPI_Finalize (which
// would wait for the stalled rank forever, as it did before) so mpirun ends the job.
TEST(CommMpirunFailure, StalledRankTimesOutAndEndsTheJob) {
  if (std::system("mpirun --version >/dev/null 2>&1") != 0) GTEST_SKIP() << "mpirun not found";
  const std::string out = HurtRankUnderMpirun(SIGSTOP, 4);
  EXPECT_NE(out.find("MPI did not complete it within"), std::string::npos) << out;
  EXPECT_NE(out.find("allreduce #"), std::string::npos) << out;
}

}  // namespace
}  // namespace gantry::comm::testing
