// Shared-memory barrier: every rank posts one empty stage and waits for all others' posts.
#include "comm/shm/shm_algorithms.h"

namespace gantry::comm {

Status ShmBarrier(ShmGroup& g, const ShmGroup::Op& op) {
  const uint64_t q = g.TakeStages(1);
  GANTRY_RETURN_IF_ERROR(g.Acquire(op, q));
  g.Post(op, q);
  for (int j = 0; j < g.size(); ++j) {
    if (j != g.rank()) GANTRY_RETURN_IF_ERROR(g.WaitPosted(op, j, q));
  }
  g.MarkDone(q);
  return OkStatus();
}

}  // namespace gantry::comm
