// Communicator: collective and point-to-point communication among the ranks of one job.
// Contract (every backend: tcp, shm, mpi, nccl, hierarchical):
// - Calls are asynchronous: each returns a Work handle at once; the operation runs in the
//   backend's progress thread (or device stream), in call order. Every rank must issue the
//   same collectives in the same order with matching count/dtype/op/root (checked where the
//   backend can: tcp, shm and hier report a mismatch as kFailedPrecondition).
// - Buffers are borrowed: they must stay valid and untouched until the Work completes.
//   send may equal recv (in place). Host backends take host memory; nccl takes device memory.
// - Threading: one thread issues calls on a communicator (like a CUDA stream); Work::Wait,
//   Abort and AsyncError may be called from any thread.
// - Errors: an operation that cannot finish within CommOptions::timeout fails with
//   kDeadlineExceeded; a dead peer gives kUnavailable. Messages name the operation, its
//   sequence number, the peer rank and the time waited. After the first failure the
//   communicator is broken: later calls fail at once with that error (NCCL semantics);
//   create a new communicator to recover.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "base/status.h"
#include "comm/types.h"

namespace gantry::comm {

class Work {
 public:
  virtual ~Work() = default;
  // Blocks until the operation finished or `timeout` passed; returns the operation's status,
  // or kDeadlineExceeded when this wait ran out (the operation itself keeps running and is
  // bounded by the communicator's own timeout). Callable from any thread, more than once.
  virtual Status Wait(std::chrono::milliseconds timeout = std::chrono::hours(24 * 365)) = 0;
  // True once finished (successfully or not). Never blocks.
  virtual bool Done() const = 0;
};
using WorkPtr = std::shared_ptr<Work>;

// Load/store access to the peers' symmetric memory (Communicator::AllocateSymmetric), for
// algorithms that fold a reduction into their own pass over the data instead of running a
// collective (data parallel on one host: every rank's optimizer sums all ranks' gradients
// while it updates, train/data_parallel.h). Same-host backends only (shm). Synchronisation
// is by signals: each rank owns kSignals monotonic counters its peers can read and wait on.
// Threading: the communicator's issuing thread. The signals are independent of the
// collectives' own counters, so collectives may run meanwhile.
class SymmetricPeers {
 public:
  static constexpr int kSignals = 4;
  virtual ~SymmetricPeers() = default;
  // Rank r's copy of [p, p + bytes) when that range lies in memory this rank got from
  // AllocateSymmetric (r == rank(): p itself); nullptr otherwise.
  virtual const void* Peer(const void* p, size_t bytes, int r) const = 0;
  // Publishes this rank's signal `slot` (0 <= slot < kSignals) as `value` with release order:
  // a peer that sees the value also sees every write this thread made before. Never decrease.
  virtual void Signal(int slot, uint64_t value) = 0;
  // Rank r's signal `slot` now (acquire); never blocks.
  virtual uint64_t PeekSignal(int r, int slot) const = 0;
  // Blocks until rank r's signal `slot` >= value. Bounded by `timeout`; ends at once when r
  // dies, the communicator is aborted or a peer broke the group. The error names `what`, the
  // rank and the time waited, and breaks the communicator (its peers fail at once too).
  virtual Status WaitSignal(int r, int slot, uint64_t value, std::chrono::milliseconds timeout,
                            const std::string& what) = 0;
};

class Communicator {
 public:
  virtual ~Communicator() = default;

  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual std::string_view backend() const = 0;   // "tcp", "shm", "mpi", "nccl", "hier"
  virtual MemoryKind memory() const = 0;          // where buffers must live

  // recv[i] = op over ranks of send[i], i < count, on every rank.
  virtual WorkPtr Allreduce(const void* send, void* recv, size_t count, DataType dtype,
                            ReduceOp op) = 0;
  // data on `root` is copied to every rank's data.
  virtual WorkPtr Broadcast(void* data, size_t count, DataType dtype, int root) = 0;
  // recv[r*count + i] = send of rank r [i]; recv holds size()*count elements.
  virtual WorkPtr Allgather(const void* send, void* recv, size_t count, DataType dtype) = 0;
  // recv[i] = op over ranks of send[rank()*count + i]; send holds size()*count elements.
  virtual WorkPtr ReduceScatter(const void* send, void* recv, size_t count, DataType dtype,
                                ReduceOp op) = 0;
  // Point-to-point, matched in order per (sender, receiver) pair; tags must agree (checked).
  // Sends and receives progress independently of each other and of collectives.
  virtual WorkPtr Send(const void* data, size_t count, DataType dtype, int peer,
                       uint32_t tag = 0) = 0;
  virtual WorkPtr Recv(void* data, size_t count, DataType dtype, int peer, uint32_t tag = 0) = 0;
  // Completes on every rank once all ranks have entered it.
  virtual WorkPtr Barrier() = 0;

  // Symmetric memory (optional; collective and blocking: every rank calls it with the same
  // bytes, in the same order among the collectives, from the issuing thread). Returns this
  // rank's part of a zero-filled allocation that the backend can also reach on its peers, so
  // collectives on buffers inside it, at the same offset on every rank, skip staging copies
  // (shm: the peers read it directly). A null pointer means "not supported here" (the
  // default, and the shm backend when /dev/shm is too small): use ordinary memory. The memory
  // stays valid while the returned pointer or the communicator holds it.
  virtual StatusOr<std::shared_ptr<void>> AllocateSymmetric(size_t bytes) {
    (void)bytes;
    return std::shared_ptr<void>();
  }

  // Direct access to the peers' symmetric memory, or nullptr where the backend has none
  // (every backend but shm). Owned by the communicator.
  virtual SymmetricPeers* symmetric_peers() { return nullptr; }

  // Tears the communicator down from any thread: pending and future operations fail with
  // kAborted carrying `reason`; peers see this rank's connections close.
  virtual void Abort(const Status& reason) = 0;
  // First error any operation hit (OK while healthy). Never blocks.
  virtual Status AsyncError() const = 0;

  // Typed conveniences (T = float, int32_t, BFloat16, Float16), in place where it makes sense.
  template <typename T>
  WorkPtr Allreduce(std::span<T> data, ReduceOp op = ReduceOp::kSum) {
    return Allreduce(data.data(), data.data(), data.size(), DataTypeOf<T>::kValue, op);
  }
  template <typename T>
  WorkPtr Broadcast(std::span<T> data, int root) {
    return Broadcast(data.data(), data.size(), DataTypeOf<T>::kValue, root);
  }
  template <typename T>
  WorkPtr Allgather(std::span<const T> send, std::span<T> recv) {
    return Allgather(send.data(), recv.data(), send.size(), DataTypeOf<T>::kValue);
  }
};

}  // namespace gantry::comm
