// RingEngine: executes a RingPlan over K sockets to the next rank and K from the previous one,
// in one thread: non-blocking send/recv driven by poll(), chunk i on socket i % K, each
// received chunk reduced while still in cache. Staging buffers are kept between operations
// (never reallocated per op: fresh pages cost ~12 us per 4 KiB on our machines).
#pragma once

#include <functional>
#include <vector>

#include "comm/tcp/ring_plan.h"
#include "comm/tcp/socket.h"

namespace gantry::comm {

struct RingPeers {
  int prev;  // rank we receive from
  int next;  // rank we send to
};

class RingEngine {
 public:
  // Runs `plan` to completion or the first error. `on_first_recv` runs when receive 0 (the op
  // header) completed, to validate it before any data moves. Errors name `label`, the peer
  // rank, bytes moved and the time since `start` (the label is formatted only on error).
  Status Run(const RingPlan& plan, std::vector<Socket>& to_next, std::vector<Socket>& from_prev,
             const RingPeers& peers, const OpLabel& label, Clock::time_point start,
             Deadline deadline, const std::function<Status()>& on_first_recv);

 private:
  struct Cursor {
    size_t index;
    size_t offset;
  };
  static constexpr std::chrono::microseconds kSpin{50};
  Status PeerError(const OpLabel& label, int peer, bool receiving, int err,
                   Clock::time_point start) const;

  std::vector<std::vector<char>> staging_;
  std::vector<uint8_t> done_;       // receives complete (reduced)
  std::vector<uint8_t> send_done_;  // sends handed to the kernel
  std::vector<Cursor> send_cur_, recv_cur_;
  size_t sent_bytes_ = 0, recv_bytes_ = 0, total_send_ = 0, total_recv_ = 0;
};

}  // namespace gantry::comm
