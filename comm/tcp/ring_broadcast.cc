// Ring broadcast: the root streams chunks to its next neighbour; every other rank receives
// each chunk in place and forwards it at once, unless its next neighbour is the root.
#include "comm/tcp/ring_plan.h"

namespace gantry::comm {

void PlanBroadcast(const RingShape& ring, void* data, size_t bytes, int root, RingPlan* plan) {
  const int n = ring.size, r = ring.rank;
  const size_t nchunks = (bytes + ring.chunk_bytes - 1) / ring.chunk_bytes;
  const int32_t base = static_cast<int32_t>(plan->recvs.size());
  char* p = static_cast<char*>(data);
  const bool is_root = r == root, forwards = Mod(r + 1, n) != root;
  for (size_t c = 0; c < nchunks; ++c) {
    size_t lo = c * ring.chunk_bytes;
    size_t len = lo + ring.chunk_bytes < bytes ? ring.chunk_bytes : bytes - lo;
    if (is_root) {
      plan->sends.push_back({p + lo, len, -1});
    } else {
      plan->recvs.push_back({p + lo, len, nullptr, false});
      if (forwards) plan->sends.push_back({p + lo, len, base + static_cast<int32_t>(c)});
    }
  }
}

}  // namespace gantry::comm
