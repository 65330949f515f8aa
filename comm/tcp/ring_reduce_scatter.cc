// Ring reduce-scatter: n-1 pipelined steps; partial sums travel through `scratch` and the
// last step reduces straight into the caller's output (this rank's block).
#include "comm/tcp/ring_plan.h"

namespace gantry::comm {

void PlanReduceScatter(const RingShape& ring, const void* send, void* recv, void* scratch,
                       size_t count, RingPlan* plan) {
  const int n = ring.size, r = ring.rank;
  const size_t es = DataTypeSize(plan->dtype);
  const size_t chunk_elems = ring.chunk_bytes / es > 0 ? ring.chunk_bytes / es : 1;
  const size_t nchunks = (count + chunk_elems - 1) / chunk_elems;
  const int32_t base = static_cast<int32_t>(plan->recvs.size());
  const char* in = static_cast<const char*>(send);
  char* tmp = static_cast<char*>(scratch);
  char* out = static_cast<char*>(recv);
  for (int t = 0; t < n - 1; ++t) {
    const int send_seg = Mod(r - 1 - t, n), recv_seg = Mod(r - 2 - t, n);
    const bool last = t == n - 2;
    for (size_t c = 0; c < nchunks; ++c) {
      size_t lo = c * chunk_elems, hi = lo + chunk_elems < count ? lo + chunk_elems : count;
      size_t bytes = (hi - lo) * es;
      size_t soff = (send_seg * count + lo) * es, roff = (recv_seg * count + lo) * es;
      const int32_t dep = t == 0 ? -1 : base + static_cast<int32_t>((t - 1) * nchunks + c);
      plan->sends.push_back({(t == 0 ? in : tmp) + soff, bytes, dep});
      char* dst = last ? out + lo * es : tmp + roff;
      plan->recvs.push_back({dst, bytes, in + roff, last && plan->op == ReduceOp::kAvg});
    }
  }
}

}  // namespace gantry::comm
