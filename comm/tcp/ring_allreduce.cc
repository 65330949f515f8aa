// Ring allreduce: n-1 reduce-scatter steps then n-1 allgather steps, each segment cut into
// chunks so chunk c of step t+1 is forwarded as soon as chunk c of step t arrived (pipelined),
// the steps interleaved on the wire (see kStepLagChunks). After the reduce-scatter, rank r
// owns the fully reduced segment r+1. Two ranks with small messages exchange instead
// (PlanExchangeAllreduce): latency, not bandwidth, decides there.
#include "comm/tcp/ring_plan.h"

namespace gantry::comm {

namespace {
// How many chunks of step t go out before step t + 1's first chunk.
constexpr size_t kStepLagChunks = 2;
}  // namespace

void PlanAllreduce(const RingShape& ring, const void* send, void* recv, size_t count,
                   RingPlan* plan) {
  const int n = ring.size, r = ring.rank;
  const size_t es = DataTypeSize(plan->dtype);
  const size_t max_seg = (count + n - 1) / n;
  const size_t chunk_elems = ring.chunk_bytes / es > 0 ? ring.chunk_bytes / es : 1;
  const size_t nchunks = (max_seg + chunk_elems - 1) / chunk_elems;
  const int steps = 2 * (n - 1);
  const int32_t base = static_cast<int32_t>(plan->recvs.size());
  const char* in = static_cast<const char*>(send);
  char* out = static_cast<char*>(recv);
  // Chunk c of step t goes on the wire at position c + t * kStepLagChunks (ties: earlier
  // step first), not after all of step t - 1: a chunk is forwarded (or, after the last
  // reduce-scatter step, sent as a result) kStepLagChunks chunks after it arrived, while it is
  // still in cache, instead of being read back from memory once the whole previous step is
  // through. Every rank uses the same order, so its receives line up with its neighbour's
  // sends; a send only waits on a receive that comes earlier in the stream (no cycle).
  const size_t positions = nchunks + size_t(steps - 1) * kStepLagChunks;
  int32_t next_index = base;
  // Plan index of step t's chunk c, for the dependency of step t + 1's chunk c: filled as
  // the chunks are placed (a step's chunk c is always placed before step t + 1's).
  plan->scratch.assign(size_t(steps) * nchunks, -1);
  for (size_t pos = 0; pos < positions; ++pos) {
    for (int t = 0; t < steps; ++t) {
      const size_t lag = size_t(t) * kStepLagChunks;
      if (pos < lag || pos - lag >= nchunks) continue;
      const size_t c = pos - lag;
      const bool reduce_step = t < n - 1;
      const int ag = t - (n - 1);
      const int send_seg = reduce_step ? Mod(r - t, n) : Mod(r + 1 - ag, n);
      const int recv_seg = reduce_step ? Mod(r - t - 1, n) : Mod(r - ag, n);
      auto range = [&](int seg, size_t* off) {
        size_t b = SegmentBegin(count, n, seg), e = SegmentBegin(count, n, seg + 1);
        size_t lo = b + c * chunk_elems, hi = lo + chunk_elems;
        lo = lo < e ? lo : e;
        hi = hi < e ? hi : e;
        *off = lo * es;
        return (hi - lo) * es;
      };
      size_t soff, roff;
      size_t sbytes = range(send_seg, &soff), rbytes = range(recv_seg, &roff);
      const int32_t dep = t == 0 ? -1 : plan->scratch[size_t(t - 1) * nchunks + c];
      plan->scratch[size_t(t) * nchunks + c] = next_index++;
      plan->sends.push_back({(t == 0 ? in : out) + soff, sbytes, dep});
      if (reduce_step) {
        plan->recvs.push_back({out + roff, rbytes, in + roff,
                               plan->op == ReduceOp::kAvg && t == n - 2});
      } else {
        plan->recvs.push_back({out + roff, rbytes, nullptr, false});
      }
    }
  }
}

void PlanExchangeAllreduce(const RingShape& ring, const void* send, void* recv, size_t count,
                           RingPlan* plan) {
  const size_t es = DataTypeSize(plan->dtype);
  const size_t bytes = count * es;
  const size_t chunk = ring.chunk_bytes / es > 0 ? ring.chunk_bytes / es * es : es;
  const char* in = static_cast<const char*>(send);
  char* out = static_cast<char*>(recv);
  // Rank 0 computes mine op theirs, rank 1 theirs op mine: both reduce (x0, x1) in that order.
  const bool received_first = ring.rank == 1;
  for (size_t off = 0; off < bytes; off += chunk) {
    const size_t len = bytes - off < chunk ? bytes - off : chunk;
    const int32_t send_index = static_cast<int32_t>(plan->sends.size());
    plan->sends.push_back({in + off, len, -1});
    RecvChunk r{out + off, len, in + off, plan->op == ReduceOp::kAvg};
    r.received_first = received_first;
    if (in == out) r.after_send = send_index;  // do not overwrite what is still being sent
    plan->recvs.push_back(r);
  }
}

}  // namespace gantry::comm
