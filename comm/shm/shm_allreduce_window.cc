// Shared-memory allreduce on symmetric memory (every rank's buffer is at the same offset of a
// window every rank has mapped): no staging. In one stage per message rank r reduces slice r
// in place, reading the peers' slices straight from their windows, publishes it, then copies
// the peers' reduced slices from their windows into its own. Per rank and byte that is 1.5
// reads + 1 write (the staged path, shm_allreduce.cc: 2 + 2). Values are combined in rank
// order (ReduceRanks), so both paths give the same bits. Before returning, a rank waits until
// every peer is done reading its window: the caller may then overwrite the buffer.
#include <algorithm>
#include <cstring>
#include <vector>

#include "comm/reduce.h"
#include "comm/shm/shm_algorithms.h"
#include "comm/shm/shm_kernels.h"
#include "comm/shm/shm_window.h"
#include "comm/tcp/ring_plan.h"

namespace gantry::comm {
namespace {

// Reduces elements [b, e) of the stage (byte offset in every window: base[]) in place in this
// rank's window, from every rank's values in rank order (ReduceRanks: the staged path's bits).
Status ReduceOwnSlice(ShmGroup& g, const ShmGroup::Op& op, const std::vector<char*>& base,
                      uint64_t q, size_t b, size_t e, DataType dtype, ReduceOp rop,
                      std::vector<const char*>& srcs, std::vector<const float*>& scratch) {
  const int n = g.size(), r = g.rank();
  const size_t es = DataTypeSize(dtype);
  GANTRY_RETURN_IF_ERROR(g.WaitAllPosted(op, q));
  srcs.clear();
  for (int j = 0; j < n; ++j) srcs.push_back(base[j] + b * es);
  ReduceRanks(base[r] + b * es, nullptr, srcs, e - b, dtype, rop, /*stream=*/false, scratch);
  return OkStatus();
}

}  // namespace

Status ShmAllreduceWindow(ShmGroup& g, const ShmGroup::Op& op, const ShmWindows& windows, int w,
                          size_t offset, size_t count, DataType dtype, ReduceOp rop) {
  const int n = g.size(), r = g.rank();
  const size_t es = DataTypeSize(dtype);
  // One stage for the whole message: nothing is staged, so stages would only add waits
  // (measured: 16 MiB 1.84 ms in 256 KiB stages, 1.23 ms in one).
  const size_t group = std::max<size_t>(count, 1);
  const uint64_t stages = count > 0 ? 1 : 0;
  const uint64_t q0 = g.TakeStages(stages);
  std::vector<char*> base(n);
  std::vector<const char*> srcs;
  std::vector<const float*> scratch;
  srcs.reserve(n);
  scratch.reserve(n);
  for (uint64_t k = 0; k < stages; ++k) {
    const uint64_t q = q0 + k;
    const size_t first = k * group, len = std::min(group, count - first);
    for (int j = 0; j < n; ++j) base[j] = windows.base(w, j) + offset + first * es;
    GANTRY_RETURN_IF_ERROR(g.Acquire(op, q));
    g.Post(op, q);  // the data is in place already
    const size_t b = SegmentBegin(len, n, r), e = SegmentBegin(len, n, r + 1);
    GANTRY_RETURN_IF_ERROR(ReduceOwnSlice(g, op, base, q, b, e, dtype, rop, srcs, scratch));
    g.MarkReduced(q);
    for (int j = 0; j < n; ++j) {
      if (j == r) continue;
      GANTRY_RETURN_IF_ERROR(g.WaitReduced(op, j, q));
      const size_t jb = SegmentBegin(len, n, j), je = SegmentBegin(len, n, j + 1);
      std::memcpy(base[r] + jb * es, base[j] + jb * es, (je - jb) * es);
    }
    g.MarkDone(q);
  }
  if (stages == 0) return OkStatus();
  for (int j = 0; j < n; ++j) {
    if (j != r) GANTRY_RETURN_IF_ERROR(g.WaitDone(op, j, q0 + stages - 1));
  }
  return OkStatus();
}

}  // namespace gantry::comm
