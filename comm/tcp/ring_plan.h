// RingPlan: a collective written as two ordered chunk lists for a ring — what this rank sends
// to its next neighbour and what it receives from its previous one. A send may depend on a
// receive (forward what just arrived); a receive may reduce into its destination. The
// algorithms (one per file: ring_allreduce.cc, ring_reduce_scatter.cc, ring_allgather.cc,
// ring_broadcast.cc) only build plans; RingEngine (ring_engine.h) executes them.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "comm/types.h"

namespace gantry::comm {

struct SendChunk {
  const char* src;
  size_t bytes;
  int32_t dep;  // index of the receive that must complete first, or -1
};

struct RecvChunk {
  char* dst;
  size_t bytes;
  const char* reduce_with;  // nullptr: receive straight into dst; else dst = reduce_with op data
  bool finish_average;      // after reducing, divide by the world size (avg's last step)
  // dst = data op reduce_with instead (operands in rank order when the sender is the lower
  // rank, so ranks that each reduce the same pair get the same bits for every op).
  bool received_first = false;
  // Index of a send that reads dst: the received data is held in staging and dst written only
  // once that send completed (in-place exchange), or -1.
  int32_t after_send = -1;
};

struct RingPlan {
  std::vector<SendChunk> sends;
  std::vector<RecvChunk> recvs;
  DataType dtype = DataType::kF32;
  ReduceOp op = ReduceOp::kSum;
  int world = 1;
  std::vector<int32_t> scratch;  // for the builders (kept between ops, like the lists)
  void Reset(DataType d, ReduceOp o, int n) {
    sends.clear();
    recvs.clear();
    dtype = d;
    op = o;
    world = n;
  }
};

// Where a ring of `n` ranks puts segment i of `count` elements: [SegmentBegin(i), (i+1)).
inline size_t SegmentBegin(size_t count, int n, int i) {
  size_t q = count / n, r = count % n;
  return q * i + (static_cast<size_t>(i) < r ? i : r);
}
inline int Mod(int a, int n) { return ((a % n) + n) % n; }

// Geometry shared by the builders.
struct RingShape {
  int rank;
  int size;
  size_t chunk_bytes;  // upper bound per chunk
};

// recv = op over ranks of send (count elements). Ring reduce-scatter then allgather.
void PlanAllreduce(const RingShape& ring, const void* send, void* recv, size_t count,
                   RingPlan* plan);
// Two ranks only: each sends its whole input and reduces the peer's into recv, in rank order
// (one round trip instead of the ring's two; same bytes on the wire, twice the reduce work).
void PlanExchangeAllreduce(const RingShape& ring, const void* send, void* recv, size_t count,
                           RingPlan* plan);
// recv (count) = op over ranks of send[rank*count ...]; scratch holds size*count elements.
void PlanReduceScatter(const RingShape& ring, const void* send, void* recv, void* scratch,
                       size_t count, RingPlan* plan);
// recv[r*count ...] = send of rank r; the caller already placed this rank's block in recv.
void PlanAllgather(const RingShape& ring, void* recv, size_t count, RingPlan* plan);
// data (bytes) flows from root around the ring; every rank forwards unless next is root.
void PlanBroadcast(const RingShape& ring, void* data, size_t bytes, int root, RingPlan* plan);

}  // namespace gantry::comm
