// Under mpirun (Open MPI, --allow-run-as-root --oversubscribe): the mpi backend through the
// conformance suite, and the tcp backend bootstrapped from MPI (no RANK/MASTER_* set).
#include <gtest/gtest.h>

#include "tests/integration/comm_launcher.h"

namespace gantry::comm::testing {
namespace {

class CommMpirun : public ::testing::TestWithParam<std::tuple<std::string, int>> {};

TEST_P(CommMpirun, ConformanceUnderMpirun) {
  const auto& [backend, world] = GetParam();
  if (std::system("mpirun --version >/dev/null 2>&1") != 0) GTEST_SKIP() << "mpirun not found";
  const std::string cmd = "GANTRY_COMM_BACKEND=" + backend +
                          " GANTRY_COMM_TIMEOUT_S=60 timeout -s KILL 170 mpirun -np " +
                          std::to_string(world) +
                          " --allow-run-as-root --oversubscribe --mca btl self,vader,tcp "
                          "--mca btl_tcp_if_include lo -x GANTRY_COMM_BACKEND -x "
                          "GANTRY_COMM_TIMEOUT_S " GANTRY_COMM_TEST_WORKER " conformance 2>&1";
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
                         ::testing::Values(std::make_tuple("mpi", 2), std::make_tuple("mpi", 3),
                                           std::make_tuple("tcp", 2)),
                         [](const auto& info) {
                           return std::get<0>(info.param) + "_" + std::to_string(std::get<1>(info.param));
                         });

}  // namespace
}  // namespace gantry::comm::testing
