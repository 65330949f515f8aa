// The hierarchical backend (shm inside a host, tcp between host leaders), with GANTRY_HOST_ID
// splitting loopback ranks into fake hosts: conformance on uneven hosts (incl. the
// host-major reduce-scatter with padding), and kill -9 of a non-leader rank: every survivor
// fails fast with the op named, and errors name GLOBAL ranks (the dead host-mate, or the
// leader of the host that broke), never a rank's index inside its host. Mismatched
// arguments (avg against sum, another broadcast root) and a failed receive break the
// communicator on every rank instead of returning OK (and another rank's data).
#include <gtest/gtest.h>

#include <algorithm>
#include <regex>
#include <sstream>

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

// One rank's report from `comm_test_worker mismatch`: the op's status line and the statuses of
// the allreduce and barrier after it.
struct MismatchReport {
  std::string op;                 // "OK" or "FAILED_PRECONDITION: ..."
  bool wrong_data = false;        // OK, but not the data this rank asked for
  std::vector<std::string> next;  // the two later calls
};

MismatchReport ParseMismatch(const std::string& output) {
  MismatchReport m;
  std::istringstream in(output);
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("OP ", 0) == 0) m.op = line.substr(3);
    if (line.rfind("NEXT ", 0) == 0) m.next.push_back(line.substr(5));
    if (line == "WRONG DATA") m.wrong_data = true;
  }
  return m;
}

// Hosts a = {0, 1}, b = {2, 3} (leaders 0 and 2); the ranks in `deviants` call `kind` with
// other arguments. Every rank `must_fail` fails the op with kFailedPrecondition whose message
// matches `says`; no rank returns OK with data it did not ask for; and the communicator is
// broken everywhere afterwards (both later calls fail on every rank).
void ExpectMismatchFails(const std::string& kind, const std::string& deviants,
                         const std::vector<int>& must_fail, const std::string& says) {
  SCOPED_TRACE(kind + " on ranks " + deviants);
  RankGroup group(GANTRY_COMM_TEST_WORKER, 4, {"mismatch", kind, deviants},
                  {{"GANTRY_COMM_BACKEND", "auto"}, {"GANTRY_COMM_TIMEOUT_S", "60"}}, {},
                  Hosts({"a", "a", "b", "b"}));
  auto results = group.Wait(120);  // a hang would show as a killed rank, not as slowness
  for (int r = 0; r < 4; ++r) {
    SCOPED_TRACE("rank " + std::to_string(r) + " output:\n" + results[r].output);
    ASSERT_EQ(results[r].exit_code, 0);
    const MismatchReport m = ParseMismatch(results[r].output);
    EXPECT_FALSE(m.wrong_data);
    if (std::find(must_fail.begin(), must_fail.end(), r) != must_fail.end()) {
      EXPECT_EQ(m.op.rfind("FAILED_PRECONDITION", 0), 0u);
      EXPECT_TRUE(std::regex_search(m.op, std::regex(says)));
    }
    ASSERT_EQ(m.next.size(), 2u);
    for (const auto& n : m.next) EXPECT_NE(n, "OK");
  }
}

// hier runs avg as sums and divides at the end, so the op never reached a checked header: a
// rank with avg against sums returned 2.5 while the others returned 10, all OK. Now the
// host-mates compare the caller's op in the shm descriptors and the leaders in their reports,
// and every rank fails naming both ops, also the other host's (told by its leader).
TEST(CommHier, AvgAgainstSumFailsOnEveryRank) {
  const std::string says = "(avg there, sum here|sum there, avg here)";
  ExpectMismatchFails("avg", "3", {0, 1, 2, 3}, says);       // inside host b
  ExpectMismatchFails("avg", "2,3", {0, 1, 2, 3}, says);     // host b against host a
  ExpectMismatchFails("rs-avg", "3", {0, 1, 2, 3}, says);    // reduce-scatter
}

// A broadcast only passed root_host and the local root down: a rank on another host that
// named another root on the same host got the root's data with OK. Now the root (a global
// rank) is compared inside each host and across leaders. A rank on the root host may have its
// (right) data before another host finds the mismatch: its next call fails.
TEST(CommHier, BroadcastRootMismatchFailsEveryRankThatSeesIt) {
  const std::string says = "root( of the whole broadcast)? (1 there, 0 here|0 there, 1 here)";
  ExpectMismatchFails("bcast-root", "3", {2, 3}, says);
  ExpectMismatchFails("bcast-root", "2,3", {0, 2, 3}, says);
}

// Sends and receives went to an inner tcp communicator whose failure never reached hier: after
// a receive failed on a tag mismatch, every rank's next allreduce and barrier returned OK.
TEST(CommHier, FailedReceiveBreaksTheCommunicatorOnEveryRank) {
  RankGroup group(GANTRY_COMM_TEST_WORKER, 4, {"mismatch", "p2p-tag", ""},
                  {{"GANTRY_COMM_BACKEND", "auto"}, {"GANTRY_COMM_TIMEOUT_S", "60"}}, {},
                  Hosts({"a", "a", "b", "b"}));
  auto results = group.Wait(120);
  for (int r = 0; r < 4; ++r) {
    SCOPED_TRACE("rank " + std::to_string(r) + " output:\n" + results[r].output);
    ASSERT_EQ(results[r].exit_code, 0);
    const MismatchReport m = ParseMismatch(results[r].output);
    if (r == 1) EXPECT_NE(m.op.find("expected tag 8"), std::string::npos);
    ASSERT_EQ(m.next.size(), 2u);
    for (const auto& n : m.next) {
      EXPECT_EQ(n.rfind("FAILED_PRECONDITION", 0), 0u);
      EXPECT_NE(n.find("tag 8"), std::string::npos);  // every rank learns the cause
    }
  }
}

}  // namespace
}  // namespace gantry::comm::testing
