// Ring allgather: n-1 pipelined steps; each rank forwards the block it received last step.
#include "comm/tcp/ring_plan.h"

namespace gantry::comm {

void PlanAllgather(const RingShape& ring, void* recv, size_t count, RingPlan* plan) {
  const int n = ring.size, r = ring.rank;
  const size_t es = DataTypeSize(plan->dtype);
  const size_t chunk_elems = ring.chunk_bytes / es > 0 ? ring.chunk_bytes / es : 1;
  const size_t nchunks = (count + chunk_elems - 1) / chunk_elems;
  const int32_t base = static_cast<int32_t>(plan->recvs.size());
  char* out = static_cast<char*>(recv);
  for (int t = 0; t < n - 1; ++t) {
    const int send_seg = Mod(r - t, n), recv_seg = Mod(r - t - 1, n);
    for (size_t c = 0; c < nchunks; ++c) {
      size_t lo = c * chunk_elems, hi = lo + chunk_elems < count ? lo + chunk_elems : count;
      size_t bytes = (hi - lo) * es;
      const int32_t dep = t == 0 ? -1 : base + static_cast<int32_t>((t - 1) * nchunks + c);
      plan->sends.push_back({out + (send_seg * count + lo) * es, bytes, dep});
      plan->recvs.push_back({out + (recv_seg * count + lo) * es, bytes, nullptr, false});
    }
  }
}

}  // namespace gantry::comm
