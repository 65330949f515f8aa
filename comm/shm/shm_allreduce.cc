// Shared-memory allreduce. Each stage covers n slices of `chunk` bytes; rank r copies the
// slices other ranks will reduce into its slot, reduces slice r from its own (private) input
// and the others' slots, publishes the result, then copies the other slices' results out.
// The copy-in of stage k+1 overlaps the other ranks' reduction of stage k.
#include <algorithm>
#include <cstring>

#include "comm/reduce.h"
#include "comm/shm/shm_algorithms.h"
#include "comm/tcp/ring_plan.h"

namespace gantry::comm {

Status ShmAllreduce(ShmGroup& g, const ShmGroup::Op& op, const void* send, void* recv,
                    size_t count, DataType dtype, ReduceOp rop) {
  const int n = g.size(), r = g.rank();
  const size_t es = DataTypeSize(dtype);
  const size_t group = n * (g.chunk_bytes() / es);
  const uint64_t stages = (count + group - 1) / group;
  const uint64_t q0 = g.TakeStages(stages);
  const char* in = static_cast<const char*>(send);
  char* out = static_cast<char*>(recv);
  auto len_of = [&](uint64_t k) { return std::min(group, count - k * group); };
  auto copy_in = [&](uint64_t k) -> Status {
    GANTRY_RETURN_IF_ERROR(g.Acquire(op, q0 + k));
    const size_t base = k * group, len = len_of(k);
    char* slot = g.segment().input(r, q0 + k);
    for (int j = 0; j < n; ++j) {
      if (j == r) continue;
      size_t b = SegmentBegin(len, n, j), e = SegmentBegin(len, n, j + 1);
      std::memcpy(slot + b * es, in + (base + b) * es, (e - b) * es);
    }
    g.Post(op, q0 + k);
    return OkStatus();
  };
  if (stages > 0) GANTRY_RETURN_IF_ERROR(copy_in(0));
  for (uint64_t k = 0; k < stages; ++k) {
    const uint64_t q = q0 + k;
    const size_t base = k * group, len = len_of(k);
    const size_t b = SegmentBegin(len, n, r), e = SegmentBegin(len, n, r + 1);
    char* dst = out + (base + b) * es;
    const char* acc = in + (base + b) * es;
    for (int j = 0; j < n; ++j) {
      if (j == r) continue;
      GANTRY_RETURN_IF_ERROR(g.WaitPosted(op, j, q));
      ReduceInto(dst, acc, g.segment().input(j, q) + b * es, e - b, dtype, rop);
      acc = dst;
    }
    if (rop == ReduceOp::kAvg) FinishAverage(dst, e - b, dtype, n);
    std::memcpy(g.segment().result(r, q), dst, (e - b) * es);
    g.MarkReduced(q);
    if (k + 1 < stages) GANTRY_RETURN_IF_ERROR(copy_in(k + 1));
    for (int j = 0; j < n; ++j) {
      if (j == r) continue;
      GANTRY_RETURN_IF_ERROR(g.WaitReduced(op, j, q));
      size_t jb = SegmentBegin(len, n, j), je = SegmentBegin(len, n, j + 1);
      std::memcpy(out + (base + jb) * es, g.segment().result(j, q), (je - jb) * es);
    }
    g.MarkDone(q);
  }
  return OkStatus();
}

}  // namespace gantry::comm
