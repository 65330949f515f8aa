// ListDevices over libibverbs (ibv_get_device_list / ibv_query_port / ibv_query_gid).
#include "comm/verbs/verbs_devices.h"

#include <cerrno>
#include <cstdio>

#if GANTRY_COMM_WITH_VERBS
#include <infiniband/verbs.h>
#endif

namespace gantry::comm::verbs {

bool BuiltWithVerbs() { return GANTRY_COMM_WITH_VERBS != 0; }

std::string NcclIbHca(const std::vector<RdmaPort>& ports) {
  std::string out;
  for (const auto& p : ports) {
    if (!p.active()) continue;
    out += (out.empty() ? "=" : ",") + p.device + ":" + std::to_string(p.port);
  }
  return out;
}

#if GANTRY_COMM_WITH_VERBS
namespace {

std::string StateName(ibv_port_state s) {
  switch (s) {
    case IBV_PORT_ACTIVE: return "active";
    case IBV_PORT_DOWN: return "down";
    case IBV_PORT_INIT: return "init";
    case IBV_PORT_ARMED: return "armed";
    case IBV_PORT_ACTIVE_DEFER: return "active_defer";
    default: return "unknown";
  }
}

std::string GidString(const ibv_gid& gid) {
  std::string s;
  char buf[8];
  for (int i = 0; i < 16; i += 2) {
    std::snprintf(buf, sizeof(buf), "%02x%02x", gid.raw[i], gid.raw[i + 1]);
    if (!s.empty()) s += ":";
    s += buf;
  }
  return s;
}

}  // namespace

StatusOr<std::vector<RdmaPort>> ListDevices() {
  std::vector<RdmaPort> out;
  int n = 0;
  ibv_device** list = ibv_get_device_list(&n);
  if (list == nullptr) return out;  // no RDMA subsystem in this kernel: nothing to list
  Status error;
  for (int d = 0; d < n && error.ok(); ++d) {
    const std::string name = ibv_get_device_name(list[d]);
    ibv_context* ctx = ibv_open_device(list[d]);
    if (ctx == nullptr) {
      error = ErrnoError("ibv_open_device(" + name + ") (check /dev/infiniband permissions)", errno);
      break;
    }
    ibv_device_attr attr{};
    if (ibv_query_device(ctx, &attr) == 0) {
      for (int port = 1; port <= attr.phys_port_cnt; ++port) {
        ibv_port_attr pa{};
        if (ibv_query_port(ctx, static_cast<uint8_t>(port), &pa) != 0) continue;
        RdmaPort p;
        p.device = name;
        p.port = port;
        p.state = StateName(pa.state);
        p.link_layer = pa.link_layer == IBV_LINK_LAYER_ETHERNET     ? "Ethernet"
                       : pa.link_layer == IBV_LINK_LAYER_INFINIBAND ? "InfiniBand"
                                                                    : "unknown";
        p.active_mtu = 128 << static_cast<int>(pa.active_mtu);
        ibv_gid gid{};
        if (ibv_query_gid(ctx, static_cast<uint8_t>(port), 0, &gid) == 0) p.gid = GidString(gid);
        out.push_back(p);
      }
    }
    ibv_close_device(ctx);
  }
  ibv_free_device_list(list);
  if (!error.ok()) return error;
  return out;
}

#else

StatusOr<std::vector<RdmaPort>> ListDevices() { return std::vector<RdmaPort>{}; }

#endif

}  // namespace gantry::comm::verbs
