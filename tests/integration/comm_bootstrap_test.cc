// The env bootstrap with real rank processes (comm_test_worker) on loopback, where it used to
// go wrong: ranks with different WORLD_SIZE, two processes with one RANK, another program on
// MASTER_PORT, torchrun's agent store on MASTER_PORT, and an IPv6 MASTER_ADDR.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "comm/tcp/socket.h"
#include "tests/integration/comm_launcher.h"
#include "tests/unit/comm/free_ports.h"

namespace gantry::comm::testing {
namespace {

// Each rank's exit code and output, for failure messages.
std::string Outputs(const std::vector<RankResult>& rs) {
  std::string out;
  for (size_t r = 0; r < rs.size(); ++r) {
    out += "--- process " + std::to_string(r) + " exit " + std::to_string(rs[r].exit_code) +
           " after " + std::to_string(rs[r].exit_after_s) + " s\n" + rs[r].output;
  }
  return out;
}

bool Contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

// Rank 1 started with WORLD_SIZE=3 against rank 0's 2: both fail at once naming both values
// (they used to wait for the whole comm timeout, then blame "rank 2 did not publish").
TEST(BootstrapProcesses, WorldSizeMismatchFailsBothRanksAtOnce) {
  RankGroup group(GANTRY_COMM_TEST_WORKER, 2, {"conformance"},
                  {{"GANTRY_COMM_BACKEND", "tcp"}, {"GANTRY_COMM_TIMEOUT_S", "100"}},
                  {{}, {"env", "WORLD_SIZE=3"}});
  auto rs = group.Wait(60);  // did not hang: far below the comm timeout
  for (int r = 0; r < 2; ++r) {
    SCOPED_TRACE(Outputs(rs));
    EXPECT_GT(rs[r].exit_code, 0) << "rank " << r << " did not fail by itself";
    EXPECT_TRUE(Contains(rs[r].output, "WORLD_SIZE=2")) << "rank " << r;
    EXPECT_TRUE(Contains(rs[r].output, "WORLD_SIZE=3")) << "rank " << r;
  }
}

// A third process started with RANK=1 in a 2-rank job: the one that comes second is refused
// with a message that says two processes claim rank 1 (it used to fail with unrelated shm/tcp
// errors, or join the job in the real rank 1's place), and nobody waits for the timeout.
TEST(BootstrapProcesses, DuplicateRankIsNamed) {
  RankGroup group(GANTRY_COMM_TEST_WORKER, 3, {"conformance"},
                  {{"GANTRY_COMM_BACKEND", "tcp"}, {"GANTRY_COMM_TIMEOUT_S", "100"}},
                  {{"env", "WORLD_SIZE=2"}, {"env", "WORLD_SIZE=2"},
                   {"env", "WORLD_SIZE=2", "RANK=1"}});
  auto rs = group.Wait(60);
  SCOPED_TRACE(Outputs(rs));
  int named = 0;
  for (const auto& r : rs) {
    EXPECT_NE(r.exit_code, -1) << "a process hung";
    if (Contains(r.output, "two processes claim rank 1")) {
      ++named;
      EXPECT_GT(r.exit_code, 0);
      EXPECT_TRUE(Contains(r.output, "check RANK"));
    }
  }
  EXPECT_GE(named, 1);
}

// Another program holds MASTER_PORT and never answers: rank 1 fails within its comm timeout
// (4 s here; it used to wait a fixed 30 s) saying the port does not speak Gantry's protocol
// (it used to say "request for key '' failed: recv timed out").
TEST(BootstrapProcesses, ForeignListenerOnMasterPortIsNamed) {
  auto foreign = Listen("127.0.0.1", 0);  // accepts nothing; the kernel completes connections
  ASSERT_TRUE(foreign.ok());
  const std::string port = std::to_string(BoundPort(*foreign));
  RankGroup group(GANTRY_COMM_TEST_WORKER, 1, {"conformance"},
                  {{"GANTRY_COMM_BACKEND", "tcp"}, {"GANTRY_COMM_TIMEOUT_S", "4"}},
                  {{"env", "RANK=1", "WORLD_SIZE=2", "MASTER_PORT=" + port}});
  auto rs = group.Wait(60);
  SCOPED_TRACE(Outputs(rs));
  EXPECT_GT(rs[0].exit_code, 0);
  EXPECT_TRUE(Contains(rs[0].output, "does not speak Gantry's store protocol"));
  EXPECT_LT(rs[0].exit_after_s, 25) << "the hello waited longer than the comm timeout";
}

// torchrun's agent listens on MASTER_PORT and sets TORCHELASTIC_USE_AGENT_STORE=True: the
// ranks meet on MASTER_PORT+1 (rank 0 used to fail with "Address already in use").
TEST(BootstrapProcesses, TorchrunAgentStoreOnMasterPort) {
  const int port = FreePortPair();
  ASSERT_GT(port, 0);
  auto agent = Listen("", port);
  ASSERT_TRUE(agent.ok());
  const std::vector<std::string> env_port = {"env", "MASTER_PORT=" + std::to_string(port)};
  RankGroup group(GANTRY_COMM_TEST_WORKER, 2, {"conformance"},
                  {{"GANTRY_COMM_BACKEND", "tcp"},
                   {"GANTRY_COMM_TIMEOUT_S", "30"},
                   {"TORCHELASTIC_USE_AGENT_STORE", "True"}},
                  {env_port, env_port});
  auto rs = group.Wait(120);
  SCOPED_TRACE(Outputs(rs));
  for (int r = 0; r < 2; ++r) {
    EXPECT_EQ(rs[r].exit_code, 0);
    EXPECT_TRUE(Contains(rs[r].output, "PASS"));
    EXPECT_TRUE(Contains(rs[r].output, "MASTER_PORT+1"));
  }
}

// MASTER_ADDR=::1 (and [::1]): rank 0's store listens on IPv6 too, and the tcp backend's ranks
// find each other at ::1 (rank 0 used to fail: "connect to ::1:P ... Connection refused").
TEST(BootstrapProcesses, Ipv6MasterAddr) {
  if (!Listen("::1", 0).ok()) GTEST_SKIP() << "no IPv6 on loopback (::1)";
  RankGroup group(GANTRY_COMM_TEST_WORKER, 2, {"conformance"},
                  {{"GANTRY_COMM_BACKEND", "tcp"},
                   {"GANTRY_COMM_TIMEOUT_S", "30"},
                   {"MASTER_ADDR", "::1"}},
                  {{}, {"env", "MASTER_ADDR=[::1]"}});
  auto rs = group.Wait(120);
  SCOPED_TRACE(Outputs(rs));
  for (int r = 0; r < 2; ++r) {
    EXPECT_EQ(rs[r].exit_code, 0);
    EXPECT_TRUE(Contains(rs[r].output, "PASS"));
  }
}

}  // namespace
}  // namespace gantry::comm::testing
