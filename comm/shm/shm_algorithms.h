// Shared-memory collectives, one per file (shm_allreduce.cc, shm_reduce_scatter.cc,
// shm_allgather.cc, shm_broadcast.cc, shm_barrier.cc), all written in ShmGroup's stage
// protocol. Every rank works on its own disjoint slice of each stage in parallel; stages are
// cache-sized so data written by one core is read by the others while still in cache.
#pragma once

#include <cstddef>
#include <vector>

#include "comm/shm/shm_group.h"

namespace gantry::comm {

class ShmWindows;

// dst[i] (and shared[i] unless null) = op over the ranks' values srcs[0][i], srcs[1][i], ...
// taken in rank order, so the bits depend neither on which rank reduces an element nor on how
// the message is sliced (the staged and window paths agree). dst may alias any of srcs.
// `scratch` is reused storage. Needs srcs.size() >= 2.
void ReduceRanks(char* dst, char* shared, const std::vector<const char*>& srcs, size_t count,
                 DataType dtype, ReduceOp rop, bool stream, std::vector<const float*>& scratch);

// In place on symmetric memory: the buffer lies at byte `offset` of window `w` on every rank;
// each rank reduces its slice straight from its peers' windows and copies theirs back.
Status ShmAllreduceWindow(ShmGroup& g, const ShmGroup::Op& op, const ShmWindows& windows, int w,
                          size_t offset, size_t count, DataType dtype, ReduceOp rop);
// Staged; outputs of at least StreamingMinBytes(streaming_min_bytes) use streaming stores.
Status ShmAllreduce(ShmGroup& g, const ShmGroup::Op& op, const void* send, void* recv,
                    size_t count, DataType dtype, ReduceOp rop, size_t streaming_min_bytes = 0);
Status ShmReduceScatter(ShmGroup& g, const ShmGroup::Op& op, const void* send, void* recv,
                        size_t count, DataType dtype, ReduceOp rop);
Status ShmAllgather(ShmGroup& g, const ShmGroup::Op& op, const void* send, void* recv,
                    size_t count, DataType dtype);
Status ShmBroadcast(ShmGroup& g, const ShmGroup::Op& op, void* data, size_t bytes, int root);
Status ShmBarrier(ShmGroup& g, const ShmGroup::Op& op);

}  // namespace gantry::comm
