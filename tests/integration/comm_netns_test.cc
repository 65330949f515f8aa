// Two "hosts": network namespaces joined by a veth pair (created and deleted by this test),
// one tcp rank in each, talking over 10.231.0.1 <-> 10.231.0.2; plus auto selection giving
// the hierarchical backend when GANTRY_HOST_ID splits four loopback ranks into two hosts.
// The netns case needs root and `ip`; it is skipped otherwise.
#include <gtest/gtest.h>

#include <cstdlib>

#include "tests/integration/comm_launcher.h"

namespace gantry::comm::testing {
namespace {

int Sh(const std::string& cmd) { return std::system((cmd + " >/dev/null 2>&1").c_str()); }

class TwoNamespaces {
 public:
  TwoNamespaces() {
    tag_ = std::to_string(getpid() % 100000);
    ns_[0] = "gantry-a" + tag_;
    ns_[1] = "gantry-b" + tag_;
    const std::string va = "gva" + tag_, vb = "gvb" + tag_;
    ok_ = Sh("ip netns add " + ns_[0]) == 0 && Sh("ip netns add " + ns_[1]) == 0 &&
          Sh("ip link add " + va + " type veth peer name " + vb) == 0 &&
          Sh("ip link set " + va + " netns " + ns_[0]) == 0 &&
          Sh("ip link set " + vb + " netns " + ns_[1]) == 0 &&
          Sh("ip -n " + ns_[0] + " addr add 10.231.0.1/24 dev " + va) == 0 &&
          Sh("ip -n " + ns_[1] + " addr add 10.231.0.2/24 dev " + vb) == 0 &&
          Sh("ip -n " + ns_[0] + " link set " + va + " up") == 0 &&
          Sh("ip -n " + ns_[1] + " link set " + vb + " up") == 0 &&
          Sh("ip -n " + ns_[0] + " link set lo up") == 0 &&
          Sh("ip -n " + ns_[1] + " link set lo up") == 0;
  }
  ~TwoNamespaces() {
    Sh("ip netns del " + ns_[0]);  // deleting a namespace deletes its end of the veth pair
    Sh("ip netns del " + ns_[1]);
  }
  bool ok() const { return ok_; }
  std::vector<std::string> Exec(int i) const { return {"ip", "netns", "exec", ns_[i]}; }

 private:
  std::string tag_, ns_[2];
  bool ok_ = false;
};

TEST(CommTwoHosts, TcpRanksInTwoNetworkNamespaces) {
  if (geteuid() != 0 || Sh("ip -V") != 0) GTEST_SKIP() << "needs root and iproute2";
  TwoNamespaces ns;
  ASSERT_TRUE(ns.ok()) << "could not create namespaces/veth (kernel without netns support?)";
  RankGroup group(GANTRY_COMM_TEST_WORKER, 2, {"conformance"},
                  {{"GANTRY_COMM_BACKEND", "tcp"}, {"MASTER_ADDR", "10.231.0.1"},
                   {"GANTRY_COMM_TIMEOUT_S", "60"}},
                  {ns.Exec(0), ns.Exec(1)});
  auto results = group.Wait(150);
  for (int r = 0; r < 2; ++r) {
    EXPECT_EQ(results[r].exit_code, 0) << results[r].output;
    EXPECT_NE(results[r].output.find("PASS"), std::string::npos) << results[r].output;
  }
}

TEST(CommTwoHosts, AutoPicksHierarchicalAcrossHostIds) {
  RankGroup group(GANTRY_COMM_TEST_WORKER, 4, {"conformance"},
                  {{"GANTRY_COMM_BACKEND", "auto"}, {"GANTRY_COMM_TIMEOUT_S", "60"}}, {},
                  {{{"GANTRY_HOST_ID", "h0"}}, {{"GANTRY_HOST_ID", "h1"}},
                   {{"GANTRY_HOST_ID", "h0"}}, {{"GANTRY_HOST_ID", "h1"}}});
  auto results = group.Wait(150);
  for (int r = 0; r < 4; ++r) {
    EXPECT_EQ(results[r].exit_code, 0) << results[r].output;
    EXPECT_NE(results[r].output.find("(hier)"), std::string::npos) << results[r].output;
  }
}

}  // namespace
}  // namespace gantry::comm::testing
