// Ring allreduce: n-1 reduce-scatter steps then n-1 allgather steps, each segment cut into
// chunks so chunk c of step t+1 is forwarded as soon as chunk c of step t arrived (pipelined).
// After the reduce-scatter, rank r owns the fully reduced segment r+1.
#include "comm/tcp/ring_plan.h"

namespace gantry::comm {

void PlanAllreduce(const RingShape& ring, const void* send, void* recv, size_t count,
                   RingPlan* plan) {
  const int n = ring.size, r = ring.rank;
  const size_t es = DataTypeSize(plan->dtype);
  const size_t max_seg = (count + n - 1) / n;
  const size_t chunk_elems = ring.chunk_bytes / es > 0 ? ring.chunk_bytes / es : 1;
  const size_t nchunks = (max_seg + chunk_elems - 1) / chunk_elems;
  const int32_t base = static_cast<int32_t>(plan->recvs.size());
  const char* in = static_cast<const char*>(send);
  char* out = static_cast<char*>(recv);
  for (int t = 0; t < 2 * (n - 1); ++t) {
    const bool reduce_step = t < n - 1;
    const int ag = t - (n - 1);
    const int send_seg = reduce_step ? Mod(r - t, n) : Mod(r + 1 - ag, n);
    const int recv_seg = reduce_step ? Mod(r - t - 1, n) : Mod(r - ag, n);
    for (size_t c = 0; c < nchunks; ++c) {
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
      const int32_t dep = t == 0 ? -1 : base + static_cast<int32_t>((t - 1) * nchunks + c);
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

}  // namespace gantry::comm
