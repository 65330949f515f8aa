// Physical ceilings the allreduce table is read against: single-thread memcpy bandwidth on
// warm buffers, and the loopback TCP stream rate between two processes.
#pragma once

#include <cstddef>

namespace gantry::bench {

// Best of several single-thread memcpy runs of `bytes` between two warm buffers (GB/s).
double MemcpyGBps(size_t bytes);
// One process streams 1 GiB to another over 127.0.0.1 (GB/s, best of 3).
double LoopbackTcpStreamGBps();

}  // namespace gantry::bench
