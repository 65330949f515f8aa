// Every backend through one conformance suite, with real rank processes on loopback:
// allreduce (every dtype x op, counts 0, 1, 7, 1023, 1Mi+3; 64 MiB for 2-4 ranks), reduce-
// scatter (every dtype x op), allgather, broadcast from every root, send/recv and barrier, for
// 2, 3, 4 and 8 ranks (tcp also with 3 sockets per neighbour, and 2 ranks without the pair
// exchange);
// then in-place allreduces on symmetric memory (shm's window path) where the backend has it.
#include <gtest/gtest.h>

#include <map>
#include <ostream>
#include <string>

#include "tests/integration/comm_launcher.h"

namespace gantry::comm::testing {
namespace {

struct Case {
  std::string backend;
  int world;
  bool big;
  std::string variant = "";  // "" or a key of kVariants: extra environment for every rank
};

// tcp's non-default paths: chunks striped over 3 sockets per neighbour (4 KiB chunks, so
// every count above 1023 spans several sockets; 2 ranks also exchange up to 1 MiB that way,
// in place and not), and 2 ranks on the ring at every size (no pair exchange).
const std::map<std::string, std::map<std::string, std::string>> kVariants = {
    {"sockets3",
     {{"GANTRY_COMM_TCP_SOCKETS", "3"},
      {"GANTRY_COMM_TCP_CHUNK_BYTES", "4096"},
      {"GANTRY_COMM_TCP_EXCHANGE_MAX_BYTES", "1048576"}}},
    {"ring", {{"GANTRY_COMM_TCP_EXCHANGE_MAX_BYTES", "0"}}},
};

void PrintTo(const Case& c, std::ostream* os) {
  *os << c.backend << " x " << c.world << (c.big ? " big" : "") << (c.variant.empty() ? "" : " ")
      << c.variant;
}

class CommConformance : public ::testing::TestWithParam<Case> {};

TEST_P(CommConformance, AllCollectivesMatchReference) {
  const Case& c = GetParam();
  std::vector<std::string> args = {"conformance"};
  if (c.big) args.push_back("--big");
  std::map<std::string, std::string> env = {{"GANTRY_COMM_BACKEND", c.backend},
                                            {"GANTRY_COMM_TIMEOUT_S", "120"}};
  if (!c.variant.empty()) {
    for (const auto& [k, v] : kVariants.at(c.variant)) env[k] = v;
  }
  RankGroup group(GANTRY_COMM_TEST_WORKER, c.world, args, env);
  auto results = group.Wait(170);
  for (int r = 0; r < c.world; ++r) {
    EXPECT_EQ(results[r].exit_code, 0) << "rank " << r << " output:\n" << results[r].output;
    EXPECT_NE(results[r].output.find("PASS"), std::string::npos) << results[r].output;
    // shm with peers has symmetric memory (in-place allreduces were checked on it); tcp none.
    const bool symmetric = c.backend == "shm" && c.world > 1;
    EXPECT_EQ(results[r].output.find("SYMMETRIC") != std::string::npos, symmetric)
        << results[r].output;
  }
}

std::string CaseName(const ::testing::TestParamInfo<Case>& info) {
  return info.param.backend + "_" + std::to_string(info.param.world) +
         (info.param.big ? "_big" : "") + (info.param.variant.empty() ? "" : "_" + info.param.variant);
}

INSTANTIATE_TEST_SUITE_P(Backends, CommConformance,
                         ::testing::Values(Case{"tcp", 1, false}, Case{"tcp", 2, true},
                                           Case{"tcp", 3, false}, Case{"tcp", 4, true},
                                           Case{"tcp", 8, false}, Case{"tcp", 2, false, "sockets3"},
                                           Case{"tcp", 3, false, "sockets3"},
                                           Case{"tcp", 2, false, "ring"}, Case{"shm", 1, false},
                                           Case{"shm", 2, true}, Case{"shm", 3, false},
                                           Case{"shm", 4, true}, Case{"shm", 8, false}),
                         CaseName);

}  // namespace
}  // namespace gantry::comm::testing
