// Shared-memory broadcast: the root posts stage-sized pieces; the others copy them out.
#include <algorithm>
#include <cstring>

#include "comm/shm/shm_algorithms.h"

namespace gantry::comm {

Status ShmBroadcast(ShmGroup& g, const ShmGroup::Op& op, void* data, size_t bytes, int root) {
  const size_t piece = g.stage_bytes();
  const uint64_t stages = (bytes + piece - 1) / piece;
  const uint64_t q0 = g.TakeStages(stages);
  char* p = static_cast<char*>(data);
  for (uint64_t k = 0; k < stages; ++k) {
    const uint64_t q = q0 + k;
    const size_t off = k * piece, len = std::min(piece, bytes - off);
    if (g.rank() == root) {
      GANTRY_RETURN_IF_ERROR(g.Acquire(op, q));
      std::memcpy(g.segment().input(root, q), p + off, len);
      g.Post(op, q);
    } else {
      GANTRY_RETURN_IF_ERROR(g.WaitPosted(op, root, q));
      std::memcpy(p + off, g.segment().input(root, q), len);
    }
    g.MarkDone(q);
  }
  return OkStatus();
}

}  // namespace gantry::comm
