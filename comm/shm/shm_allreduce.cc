// Shared-memory allreduce. Each stage covers n slices of `chunk` bytes; rank r copies the
// slices other ranks will reduce into its slot, reduces slice r from its own (private) input
// and the others' slots into its output and its result slot in one pass, then copies the
// other slices' results out. The copy-in of stage k+1 overlaps the others' reduction of
// stage k. Per rank and byte of the message that is 2 reads + 2 writes (memcpy: 1 + 1), the
// least a copy-in/copy-out design can move; big outputs bypass the caches (shm_kernels.h).
#include <algorithm>
#include <cstring>
#include <vector>

#include "comm/reduce.h"
#include "comm/shm/shm_algorithms.h"
#include "comm/shm/shm_kernels.h"
#include "comm/tcp/ring_plan.h"

namespace gantry::comm {
namespace {

// Reduces this rank's slice [b, e) of stage q into dst (its output) and its result slot:
// the ranks' values in rank order (own value from its private input, the others' from their
// slots), so every slicing gives the same bits (ReduceRanks).
Status ReduceSlice(ShmGroup& g, const ShmGroup::Op& op, uint64_t q, const char* mine, char* dst,
                   size_t b, size_t e, DataType dtype, ReduceOp rop, bool stream,
                   std::vector<const char*>& srcs, std::vector<const float*>& scratch) {
  const int n = g.size(), r = g.rank();
  const size_t es = DataTypeSize(dtype);
  GANTRY_RETURN_IF_ERROR(g.WaitAllPosted(op, q));
  srcs.clear();
  for (int j = 0; j < n; ++j) srcs.push_back(j == r ? mine : g.segment().input(j, q) + b * es);
  ReduceRanks(dst, g.segment().result(r, q), srcs, e - b, dtype, rop, stream, scratch);
  return OkStatus();
}

}  // namespace

void ReduceRanks(char* dst, char* shared, const std::vector<const char*>& srcs, size_t count,
                 DataType dtype, ReduceOp rop, bool stream, std::vector<const float*>& scratch) {
  const int n = static_cast<int>(srcs.size());
  if (shm_kernels::CanFuse(dtype, rop)) {
    scratch.clear();
    for (const char* s : srcs) scratch.push_back(reinterpret_cast<const float*>(s));
    shm_kernels::SumF32Dual(reinterpret_cast<float*>(dst), reinterpret_cast<float*>(shared),
                            scratch[0], scratch.data() + 1, n - 1, count, rop == ReduceOp::kAvg,
                            1.0f / static_cast<float>(n), stream);
    return;
  }
  // Other dtypes/ops: blocks through a small buffer, as dst may alias any of srcs.
  const size_t es = DataTypeSize(dtype);
  alignas(64) char block[16384];
  const size_t per_block = sizeof(block) / es;
  for (size_t i = 0; i < count; i += per_block) {
    const size_t len = std::min(per_block, count - i), at = i * es;
    ReduceInto(block, srcs[0] + at, srcs[1] + at, len, dtype, rop);
    for (int j = 2; j < n; ++j) ReduceInto(block, block, srcs[j] + at, len, dtype, rop);
    if (rop == ReduceOp::kAvg) FinishAverage(block, len, dtype, n);
    std::memcpy(dst + at, block, len * es);
    if (shared != nullptr) std::memcpy(shared + at, block, len * es);
  }
}


Status ShmAllreduce(ShmGroup& g, const ShmGroup::Op& op, const void* send, void* recv,
                    size_t count, DataType dtype, ReduceOp rop, size_t streaming_min_bytes) {
  const int n = g.size(), r = g.rank();
  const size_t es = DataTypeSize(dtype);
  const size_t group = n * (g.chunk_bytes() / es);
  const uint64_t stages = (count + group - 1) / group;
  const uint64_t q0 = g.TakeStages(stages);
  const bool stream = count * es >= shm_kernels::StreamingMinBytes(streaming_min_bytes);
  const char* in = static_cast<const char*>(send);
  char* out = static_cast<char*>(recv);
  std::vector<const char*> srcs;
  std::vector<const float*> scratch;
  srcs.reserve(n);
  scratch.reserve(n);
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
    GANTRY_RETURN_IF_ERROR(ReduceSlice(g, op, q, in + (base + b) * es, out + (base + b) * es, b,
                                       e, dtype, rop, stream, srcs, scratch));
    g.MarkReduced(q);
    if (k + 1 < stages) GANTRY_RETURN_IF_ERROR(copy_in(k + 1));
    for (int j = 0; j < n; ++j) {
      if (j == r) continue;
      GANTRY_RETURN_IF_ERROR(g.WaitReduced(op, j, q));
      size_t jb = SegmentBegin(len, n, j), je = SegmentBegin(len, n, j + 1);
      shm_kernels::CopyOut(out + (base + jb) * es, g.segment().result(j, q), (je - jb) * es,
                           stream);
    }
    g.MarkDone(q);
  }
  if (stream) shm_kernels::StreamFence();  // the caller reads `recv` after Wait()
  return OkStatus();
}

}  // namespace gantry::comm
