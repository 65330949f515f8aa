// RDMA device discovery through libibverbs: every HCA port with its state, link layer
// (InfiniBand / Ethernet = RoCE) and GID 0. Used by `gantry info`, by the worker when it
// registers its resources, and to derive NCCL_IB_HCA. A host without RDMA devices (or a build
// without libibverbs) gets an empty list, not an error.
#pragma once

#include <string>
#include <vector>

#include "base/status.h"

namespace gantry::comm::verbs {

struct RdmaPort {
  std::string device;      // "mlx5_0"
  int port = 1;
  std::string state;       // "active", "down", "init", "armed", ...
  std::string link_layer;  // "InfiniBand" | "Ethernet" | "unknown"
  std::string gid;         // GID index 0, "fe80:0000:...", empty when unreadable
  int active_mtu = 0;      // bytes
  bool active() const { return state == "active"; }
};

// Lists every port of every RDMA device. kSystemError only when a present device cannot be
// opened or queried (permissions); no devices -> empty vector.
StatusOr<std::vector<RdmaPort>> ListDevices();

// NCCL_IB_HCA value selecting the active ports ("=mlx5_0:1,mlx5_1:1"); empty when none is
// active (NCCL then falls back to sockets).
std::string NcclIbHca(const std::vector<RdmaPort>& ports);

// True when built with libibverbs.
bool BuiltWithVerbs();

}  // namespace gantry::comm::verbs
