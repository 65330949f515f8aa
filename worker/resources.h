// What a worker offers: CPU slots, GPUs (CUDA runtime when the binary has kernels; count
// override for tests), RDMA devices (comm/verbs when built), labels; and the local address
// that routes to the coordinator (what peers use as MASTER_ADDR).
#pragma once

#include <map>
#include <string>

#include "base/status.h"
#include "proto/gantry.pb.h"

namespace gantry::worker {

// cpu_slots 0 = usable cores; gpus -1 = detect.
proto::WorkerResources DetectResources(int cpu_slots, int gpus,
                                       const std::map<std::string, std::string>& labels);
// The source address the kernel picks to reach the endpoint's host ("127.0.0.1" for loopback).
StatusOr<std::string> LocalAddressFor(const std::string& endpoint);
std::string HostName();

}  // namespace gantry::worker
