// The hierarchical backend (shm inside a host, tcp between host leaders), with GANTRY_HOST_ID
// splitting loopback ranks into fake hosts: conformance on uneven hosts (incl. the
// host-major reduce-scatter with padding), and kill -9 of a non-leader rank: every survivor
// fails fast with the op named, and errors name GLOBAL ranks (the dead host-mate, or the
// leader of the host that broke), never a rank's index inside its host.
#include <gtest/gtest.h>

#include <regex>

#include "tests/integration/comm_launcher.h"

namespace gantry::comm::testing {
namespace {

std::vector<std::map<std::string, std::string>> Hosts(const std::vector<std::string>& ids) {
  std::vector<std::map<std::string, std::string>> env;
  for (const auto& id : ids) env.push_back({{"GANTRY_HOST_ID", id}});
  return env;
}

TEST(CommHier, ConformanceOnUnevenHosts) {
  // Hosts a = {0, 2}, b = {1, 4}, c = {3}: members are not contiguous and c is padded.
  RankGroup group(GANTRY_COMM_TEST_WORKER, 5, {"conformance"},
                  {{"GANTRY_COMM_BACKEND", "auto"}, {"GANTRY_COMM_TIMEOUT_S", "60"}}, {},
                  Hosts({"a", "b", "a", "c", "b"}));
  auto results = group.Wait(170);
  for (int r = 0; r < 5; ++r) {
    SCOPED_TRACE("rank " + std::to_string(r) + " output:\n" + results[r].output);
    EXPECT_EQ(results[r].exit_code, 0);
    EXPECT_NE(results[r].output.find("PASS"), std::string::npos);
    EXPECT_NE(results[r].output.find("(hier)"), std::string::npos);
    // Hosts a and b have two ranks: their in-host step used shm symmetric memory; c is alone.
    EXPECT_EQ(results[r].output.find("SYMMETRIC") != std::string::npos, r != 3);
  }
}

TEST(CommHier, KillNonLeaderErrorsNameGlobalRanks) {
  // Hosts h0 = {0, 1}, h1 = {2, 3}. Rank 3 is index 1 inside h1; h1's leader is rank 2,
  // which is index 1 in the leaders' ring. A local numbering would say "rank 1" for both.
  constexpr double kTimeoutS = 60;
  const int victim = 3;
  RankGroup group(GANTRY_COMM_TEST_WORKER, 4, {"loop"},
                  {{"GANTRY_COMM_BACKEND", "auto"}, {"GANTRY_COMM_TIMEOUT_S", "60"}}, {},
                  Hosts({"h0", "h0", "h1", "h1"}));
  auto results = KillMidAllreduceAndCheckSurvivors(group, 4, victim, kTimeoutS);
  ASSERT_EQ(results.size(), 4u);
  // The host-mate saw the dead process itself: it names global rank 3.
  EXPECT_NE(results[2].output.find("peer rank 3 (pid"), std::string::npos) << results[2].output;
  EXPECT_EQ(results[2].output.find("peer rank 1 (pid"), std::string::npos) << results[2].output;
  // The other host's leader lost the ring: it names h1's leader by its global rank 2.
  EXPECT_NE(results[0].output.find("rank 2 (leader of host h1)"), std::string::npos)
      << results[0].output;
}

}  // namespace
}  // namespace gantry::comm::testing
