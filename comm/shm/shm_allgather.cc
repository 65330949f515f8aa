// Shared-memory allgather: per stage every rank posts a piece of its block; everyone copies
// every other rank's piece to its place in the output.
#include <algorithm>
#include <cstring>

#include "comm/shm/shm_algorithms.h"

namespace gantry::comm {

Status ShmAllgather(ShmGroup& g, const ShmGroup::Op& op, const void* send, void* recv,
                    size_t count, DataType dtype) {
  const int n = g.size(), r = g.rank();
  const size_t es = DataTypeSize(dtype);
  const size_t piece = g.stage_bytes() / es;
  const uint64_t stages = (count + piece - 1) / piece;
  const uint64_t q0 = g.TakeStages(stages);
  const char* in = static_cast<const char*>(send);
  char* out = static_cast<char*>(recv);
  if (out + r * count * es != in) std::memmove(out + r * count * es, in, count * es);
  const char* mine = out + r * count * es;
  for (uint64_t k = 0; k < stages; ++k) {
    const uint64_t q = q0 + k;
    const size_t off = k * piece, len = std::min(piece, count - off);
    GANTRY_RETURN_IF_ERROR(g.Acquire(op, q));
    std::memcpy(g.segment().input(r, q), mine + off * es, len * es);
    g.Post(op, q);
    for (int j = 0; j < n; ++j) {
      if (j == r) continue;
      GANTRY_RETURN_IF_ERROR(g.WaitPosted(op, j, q));
      std::memcpy(out + (j * count + off) * es, g.segment().input(j, q), len * es);
    }
    g.MarkDone(q);
  }
  return OkStatus();
}

}  // namespace gantry::comm
