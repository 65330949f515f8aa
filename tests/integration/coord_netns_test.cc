// A worker in another network namespace (veth pair, 10.251.N.0/24) joins a coordinator that
// listens on the veth address (so CURVE keys, an allow-list and tokens are required) and runs
// a rank there. Creates and deletes its own netns; skipped unless root with iproute2.
#include <unistd.h>

#include <cstdlib>

#include "proto/wire.h"
#include "tests/integration/coord_harness.h"

namespace gantry::testing {
namespace {

class NetNs {
 public:
  NetNs() : id_(std::to_string(getpid() % 200 + 20)) {
    name_ = "gantry-c" + id_;
    host_if_ = "gch" + id_;
    ns_if_ = "gcn" + id_;
    ok_ = Run("ip netns add " + name_) &&
          Run("ip link add " + host_if_ + " type veth peer name " + ns_if_) &&
          Run("ip link set " + ns_if_ + " netns " + name_) &&
          Run("ip addr add " + host_addr() + "/24 dev " + host_if_) &&
          Run("ip link set " + host_if_ + " up") &&
          Run("ip netns exec " + name_ + " ip addr add " + ns_addr() + "/24 dev " + ns_if_) &&
          Run("ip netns exec " + name_ + " ip link set " + ns_if_ + " up") &&
          Run("ip netns exec " + name_ + " ip link set lo up");
  }
  ~NetNs() {
    Run("ip link del " + host_if_ + " 2>/dev/null");
    Run("ip netns del " + name_ + " 2>/dev/null");
  }
  bool ok() const { return ok_; }
  std::string host_addr() const { return "10.251." + id_ + ".1"; }
  std::string ns_addr() const { return "10.251." + id_ + ".2"; }
  std::string exec_prefix() const { return "ip netns exec " + name_; }

 private:
  static bool Run(const std::string& cmd) { return std::system(cmd.c_str()) == 0; }
  std::string id_, name_, host_if_, ns_if_;
  bool ok_ = false;
};

TEST(CoordNetns, WorkerInAnotherNamespaceRunsARank) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to create a network namespace";
  if (std::system("ip netns list >/dev/null 2>&1") != 0) GTEST_SKIP() << "iproute2 `ip` missing";
  if (!wire::CurveAvailable()) GTEST_SKIP() << "libzmq without CURVE";
  NetNs ns;
  ASSERT_TRUE(ns.ok()) << "could not set up the veth pair";
  Cluster cl("netns");
  const std::string keys = (cl.dir() / "keys").string();
  for (const char* n : {"coordinator", "cli", "worker"}) {
    auto k = wire::GenerateCurveKeys();
    ASSERT_TRUE(k.ok());
    ASSERT_TRUE(wire::WriteKeyPair(keys, n, *k).ok());
  }
  std::ofstream(cl.dir() / "allow") << *wire::ReadKeyFile(keys + "/cli.pub") << "\n"
                                    << *wire::ReadKeyFile(keys + "/worker.pub") << "\n";
  std::ofstream(cl.dir() / "tokens") << "netns-token-0123456789 ops admin\n";
  const std::string endpoint = "tcp://" + ns.host_addr() + ":" + std::to_string(cl.port());
  cl.Spawn("coordinator",
           {"coordinator", "--bind", endpoint, "--dir", (cl.dir() / "state").string(),
            "--heartbeat-ms", "200", "--key", keys + "/coordinator.key", "--allow",
            (cl.dir() / "allow").string(), "--tokens", (cl.dir() / "tokens").string()});
  cl.Spawn("wns",
           {"worker", "--coordinator", endpoint, "--id", "wns", "--dir",
            (cl.dir() / "wns").string(), "--cpus", "1", "--label", "zone=netns", "--server-key",
            keys + "/coordinator.pub", "--key", keys + "/worker.key"},
           {}, ns.exec_prefix());
  wire::ChannelOptions o;
  o.endpoint = endpoint;
  o.timeout = std::chrono::milliseconds(2000);
  o.token = "netns-token-0123456789";
  o.server_public_key = *wire::ReadKeyFile(keys + "/coordinator.pub");
  o.public_key = *wire::ReadKeyFile(keys + "/cli.pub");
  o.secret_key = *wire::ReadKeyFile(keys + "/cli.key");
  auto c = std::move(coordinator::CoordinatorClient::Connect(o)).value();
  bool joined = false;
  for (int i = 0; i < 100 && !joined; ++i) {
    auto w = c->Workers();
    joined = w.ok() && w->workers_size() == 1 && w->workers(0).address() == ns.ns_addr();
    if (!joined) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_TRUE(joined) << cl.ReadLog("wns") << cl.ReadLog("coordinator");
  auto id = c->Submit(
      "name: far\nkind: command\nresources: {ranks: 1, labels: {zone: netns}}\n"
      "command: {argv: [/bin/sh, -c, 'echo from $MASTER_ADDR coordinator $GANTRY_COORDINATOR']}\n",
      "far.yaml", "");
  ASSERT_TRUE(id.ok()) << id.status().ToString();
  auto info = cl.WaitState(*c, *id, {"SUCCEEDED", "FAILED"});
  EXPECT_EQ(info.state(), "SUCCEEDED");
  EXPECT_NE(cl.Logs(*c, *id).find("from " + ns.ns_addr() + " coordinator " + endpoint),
            std::string::npos)
      << cl.Logs(*c, *id);
}

}  // namespace
}  // namespace gantry::testing
