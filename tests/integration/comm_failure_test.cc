// Never hang: kill -9 one rank in the middle of a stream of 64 MiB allreduces; every survivor
// must fail with an error naming the operation, its sequence number, a peer rank and the time
// waited -- long before the 60 s comm timeout, because the dead rank's sockets close (tcp) or
// its pidfd fires (shm).
#include <gtest/gtest.h>

#include <regex>

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
  // Wait until every rank is inside the allreduce loop, then let a few ops run.
  ASSERT_TRUE(group.WaitForAll("READY", std::chrono::seconds(60)))
      << "not every rank reached its allreduce loop";
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  const double killed_at = group.Seconds();
  group.Kill(victim);
  auto results = group.Wait(kTimeoutS + 30);
  const std::regex named(R"(allreduce #\d+ \(f32 x 16777216, sum\).*(peer )?rank \d+.*\d+\.\d+ s)");
  for (int r = 0; r < world; ++r) {
    if (r == victim) continue;
    SCOPED_TRACE("rank " + std::to_string(r) + " output:\n" + results[r].output);
    EXPECT_EQ(results[r].exit_code, 3);
    EXPECT_NE(results[r].output.find("COMM ERROR"), std::string::npos);
    EXPECT_TRUE(std::regex_search(results[r].output, named));
    // Fails "well before the timeout": the closed socket / exited pid is noticed directly.
    EXPECT_LT(results[r].exit_after_s - killed_at, kTimeoutS / 2);
  }
}

INSTANTIATE_TEST_SUITE_P(Backends, CommFailure,
                         ::testing::Combine(::testing::Values("tcp", "shm"), ::testing::Values(2, 4)),
                         [](const auto& info) {
                           return std::get<0>(info.param) + "_" + std::to_string(std::get<1>(info.param));
                         });

}  // namespace
}  // namespace gantry::comm::testing
