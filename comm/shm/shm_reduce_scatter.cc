// Shared-memory reduce-scatter: per stage every rank copies, for each other rank j, the piece
// of j's block into its slot; then reduces its own block's piece from all slots.
#include <algorithm>
#include <cstring>

#include "comm/reduce.h"
#include "comm/shm/shm_algorithms.h"

namespace gantry::comm {

Status ShmReduceScatter(ShmGroup& g, const ShmGroup::Op& op, const void* send, void* recv,
                        size_t count, DataType dtype, ReduceOp rop) {
  const int n = g.size(), r = g.rank();
  const size_t es = DataTypeSize(dtype);
  const size_t piece = g.chunk_bytes() / es;
  const uint64_t stages = (count + piece - 1) / piece;
  const uint64_t q0 = g.TakeStages(stages);
  const char* in = static_cast<const char*>(send);
  char* out = static_cast<char*>(recv);
  for (uint64_t k = 0; k < stages; ++k) {
    const uint64_t q = q0 + k;
    const size_t off = k * piece, len = std::min(piece, count - off);
    GANTRY_RETURN_IF_ERROR(g.Acquire(op, q));
    char* slot = g.segment().input(r, q);
    for (int j = 0; j < n; ++j) {
      if (j != r) std::memcpy(slot + j * piece * es, in + (j * count + off) * es, len * es);
    }
    g.Post(op, q);
    char* dst = out + off * es;
    const char* acc = in + (r * count + off) * es;
    for (int j = 0; j < n; ++j) {
      if (j == r) continue;
      GANTRY_RETURN_IF_ERROR(g.WaitPosted(op, j, q));
      ReduceInto(dst, acc, g.segment().input(j, q) + r * piece * es, len, dtype, rop);
      acc = dst;
    }
    if (n == 1 && dst != acc) std::memmove(dst, acc, len * es);
    if (rop == ReduceOp::kAvg) FinishAverage(dst, len, dtype, n);
    g.MarkDone(q);
  }
  return OkStatus();
}

}  // namespace gantry::comm
