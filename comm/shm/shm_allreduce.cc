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

// Reduces this rank's slice [b, e) of stage q into dst (its output) and its result slot.
Status ReduceSlice(ShmGroup& g, const ShmGroup::Op& op, uint64_t q, const char* mine, char* dst,
                   size_t b, size_t e, DataType dtype, ReduceOp rop, bool stream,
                   std::vector<const float*>& peers) {
  const int n = g.size(), r = g.rank();
  const size_t es = DataTypeSize(dtype);
  char* shared = g.segment().result(r, q);
  if (shm_kernels::CanFuse(dtype, rop)) {
    peers.clear();
    for (int j = 0; j < n; ++j) {
      if (j == r) continue;
      GANTRY_RETURN_IF_ERROR(g.WaitPosted(op, j, q));
      peers.push_back(reinterpret_cast<const float*>(g.segment().input(j, q) + b * es));
    }
    shm_kernels::SumF32Dual(reinterpret_cast<float*>(dst), reinterpret_cast<float*>(shared),
                            reinterpret_cast<const float*>(mine), peers.data(),
                            static_cast<int>(peers.size()), e - b, rop == ReduceOp::kAvg,
                            1.0f / static_cast<float>(n), stream);
    return OkStatus();
  }
  const char* acc = mine;
  for (int j = 0; j < n; ++j) {
    if (j == r) continue;
    GANTRY_RETURN_IF_ERROR(g.WaitPosted(op, j, q));
    ReduceInto(dst, acc, g.segment().input(j, q) + b * es, e - b, dtype, rop);
    acc = dst;
  }
  if (rop == ReduceOp::kAvg) FinishAverage(dst, e - b, dtype, n);
  std::memcpy(shared, dst, (e - b) * es);
  return OkStatus();
}

}  // namespace

Status ShmAllreduce(ShmGroup& g, const ShmGroup::Op& op, const void* send, void* recv,
                    size_t count, DataType dtype, ReduceOp rop) {
  const int n = g.size(), r = g.rank();
  const size_t es = DataTypeSize(dtype);
  const size_t group = n * (g.chunk_bytes() / es);
  const uint64_t stages = (count + group - 1) / group;
  const uint64_t q0 = g.TakeStages(stages);
  const bool stream = count * es >= shm_kernels::kStreamingBytes;
  const char* in = static_cast<const char*>(send);
  char* out = static_cast<char*>(recv);
  std::vector<const float*> peers;
  peers.reserve(n);
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
                                       e, dtype, rop, stream, peers));
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
