// Shared-memory broadcast: the root posts stage-sized pieces; the others copy them out.
// Every rank also posts its descriptor with each stage (no data but the root's), and on the
// last stage every rank checks every other's: a rank that names another root (or runs
// another collective) fails on every rank with kFailedPrecondition. Before, the root never
// read a descriptor and the others only checked the rank they took for the root, so ranks
// that disagreed on the root all returned OK. The check costs no round trip: the descriptors
// are posted before anyone waits, so it waits only for the last rank to arrive.
#include <algorithm>
#include <cstring>

#include "comm/shm/shm_algorithms.h"

namespace gantry::comm {

Status ShmBroadcast(ShmGroup& g, const ShmGroup::Op& op, void* data, size_t bytes, int root) {
  const size_t piece = g.stage_bytes();
  const uint64_t stages = (bytes + piece - 1) / piece;
  const uint64_t q0 = g.TakeStages(stages);
  const bool is_root = g.rank() == root;
  char* p = static_cast<char*>(data);
  for (uint64_t k = 0; k < stages; ++k) {
    const uint64_t q = q0 + k;
    const size_t off = k * piece, len = std::min(piece, bytes - off);
    // A non-root waits here only for what the root's Acquire waits for before it posts.
    GANTRY_RETURN_IF_ERROR(g.Acquire(op, q));
    if (is_root) std::memcpy(g.segment().input(root, q), p + off, len);
    g.Post(op, q);
    if (k + 1 == stages) {
      GANTRY_RETURN_IF_ERROR(g.WaitAllPosted(op, q));
    } else if (!is_root) {
      GANTRY_RETURN_IF_ERROR(g.WaitPosted(op, root, q));
    }
    if (!is_root) std::memcpy(p + off, g.segment().input(root, q), len);
    g.MarkDone(q);
  }
  return OkStatus();
}

}  // namespace gantry::comm
