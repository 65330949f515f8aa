// Physical ceilings the allreduce table is read against: single-thread memcpy bandwidth on
// warm buffers, and loopback TCP between two processes, one way and both ways at once. The
// duplex figure is the honest bound for a 2-rank ring, where each rank sends and receives
// the same bytes at the same time. Socket waits are bounded: a stuck side gives 0, not a hang.
#pragma once

#include <cstddef>

namespace gantry::bench {

// Best of several single-thread memcpy runs of `bytes` between two warm buffers (GB/s).
double MemcpyGBps(size_t bytes);
// One process streams 1 GiB to another over 127.0.0.1 (GB/s, best of 3; 0 on failure).
double LoopbackTcpStreamGBps();
// Two processes each stream 512 MiB to the other at the same time over one loopback TCP
// connection, each from a single thread with poll() (as a ring rank does); GB/s per
// direction (best of 3; 0 on failure).
double DuplexTcpStreamGBps();

}  // namespace gantry::bench
