// comm/verbs: discovery returns a list (empty without HCAs, as on our CPU machines) and the
// NCCL_IB_HCA string selects only active ports.
#include "comm/verbs/verbs_devices.h"

#include <gtest/gtest.h>

namespace gantry::comm::verbs {
namespace {

TEST(Verbs, ListDevicesNeverFailsWithoutHardware) {
  auto ports = ListDevices();
  ASSERT_TRUE(ports.ok()) << ports.status().ToString();
  for (const auto& p : *ports) {
    EXPECT_FALSE(p.device.empty());
    EXPECT_GE(p.port, 1);
  }
}

TEST(Verbs, NcclIbHcaListsActivePortsOnly) {
  std::vector<RdmaPort> ports = {{"mlx5_0", 1, "active", "InfiniBand", "", 4096},
                                 {"mlx5_1", 1, "down", "Ethernet", "", 1024},
                                 {"mlx5_2", 2, "active", "Ethernet", "", 4096}};
  EXPECT_EQ(NcclIbHca(ports), "=mlx5_0:1,mlx5_2:2");
  EXPECT_EQ(NcclIbHca({}), "");
}

}  // namespace
}  // namespace gantry::comm::verbs
