// Never hang: kill -9 one rank in the middle of a stream of 64 MiB allreduces; every survivor
// must fail with an error naming the operation, its sequence number, a peer rank and the time
// waited -- long before the 60 s comm timeout, because the dead rank's sockets close (tcp) or
// its pidfd fires (shm). Also: shm ranks that disagree on a broadcast's root all fail.
#include <gtest/gtest.h>

#include <unistd.h>

#include <cstdlib>
#include <regex>
#include <thread>

#include "tests/integration/comm_launcher.h"

namespace gantry::comm::testing {
namespace {

class CommFailure : public ::testing::TestWithParam<std::tuple<std::string, int>> {};

TEST_P(CommFailure, KillOneRankMidAllreduceFailsSurvivorsFast) {
  const auto& [backend, world] = GetParam();
  const int victim = world / 2;
  constexpr double kTimeoutS = 60;
  RankGroup group(GANTRY_COMM_TEST_WORKER, world, {"loop"},
                  {{"GANTRY_COMM_BACKEND", backend}, {"GANTRY_COMM_TIMEOUT_S", "60"}});
  KillMidAllreduceAndCheckSurvivors(group, world, victim, kTimeoutS);
}

// The same on shm's symmetric memory, where survivors read the dead rank's window directly.
TEST(CommFailureSymmetric, KillOneRankMidWindowAllreduceFailsSurvivorsFast) {
  constexpr double kTimeoutS = 60;
  for (int world : {2, 3}) {
    RankGroup group(GANTRY_COMM_TEST_WORKER, world, {"loop-symmetric"},
                    {{"GANTRY_COMM_BACKEND", "shm"}, {"GANTRY_COMM_TIMEOUT_S", "60"}});
    KillMidAllreduceAndCheckSurvivors(group, world, world - 1, kTimeoutS);
  }
}

// Ranks on one host in different PID namespaces (containers sharing /dev/shm): a peer's pid
// means nothing across them. shm used to take the peer for dead at once (its pid did not
// exist here) and fail; now such a peer is not watched by pid and the collectives run.
TEST(CommShm, RanksInAnotherPidNamespaceWork) {
  if (geteuid() != 0 || std::system("unshare --pid --fork true >/dev/null 2>&1") != 0)
    GTEST_SKIP() << "needs root to make a PID namespace (unshare --pid)";
  RankGroup group(GANTRY_COMM_TEST_WORKER, 2, {"conformance", "--big"},
                  {{"GANTRY_COMM_BACKEND", "shm"}, {"GANTRY_COMM_TIMEOUT_S", "30"}},
                  {{}, {"unshare", "--pid", "--fork"}});
  // Rank 0 pauses, so rank 1 waits long enough to check on it (every 20 ms) by pid.
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  group.Signal(0, SIGSTOP);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  group.Signal(0, SIGCONT);
  const auto results = group.Wait(120);
  for (int r = 0; r < 2; ++r)
    EXPECT_EQ(results[r].exit_code, 0) << "rank " << r << ":\n" << results[r].output;
}

// Ranks that disagree on a broadcast's root: the root never read a descriptor and the others
// checked only the rank they took for the root, so with ranks 0 and 1 broadcasting from 0 and
// rank 2 from itself every rank returned OK (and so did the next allreduce). Now every rank
// posts its descriptor and checks all of them on the last stage: every rank fails with
// kFailedPrecondition naming both roots, in one stage and in many (1e6 f32).
TEST(CommShm, BroadcastRootMismatchFailsOnEveryRank) {
  const std::regex says(R"(root ([12] there, 0 here|0 there, [12] here))");
  for (const char* kind : {"bcast-self-root", "bcast-root"}) {
    for (const char* count : {"1000", "1000000"}) {
      SCOPED_TRACE(std::string(kind) + " count " + count);
      RankGroup group(GANTRY_COMM_TEST_WORKER, 3, {"mismatch", kind, "2", count},
                      {{"GANTRY_COMM_BACKEND", "shm"}, {"GANTRY_COMM_TIMEOUT_S", "60"}});
      const auto results = group.Wait(120);  // a hang shows as a killed rank
      for (int r = 0; r < 3; ++r) {
        const std::string& out = results[r].output;
        SCOPED_TRACE("rank " + std::to_string(r) + " output:\n" + out);
        ASSERT_EQ(results[r].exit_code, 0);
        const size_t op = out.find("OP ");
        ASSERT_NE(op, std::string::npos);
        EXPECT_EQ(out.compare(op, 23, "OP FAILED_PRECONDITION:"), 0);
        EXPECT_TRUE(std::regex_search(out.substr(op, out.find('\n', op) - op), says));
        EXPECT_EQ(out.find("NEXT OK"), std::string::npos);  // broken afterwards
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Backends, CommFailure,
                         ::testing::Combine(::testing::Values("tcp", "shm"), ::testing::Values(2, 4)),
                         [](const auto& info) {
                           return std::get<0>(info.param) + "_" + std::to_string(std::get<1>(info.param));
                         });

}  // namespace
}  // namespace gantry::comm::testing
