// NcclCommunicator: collectives on CUDA device buffers through NCCL. The unique id travels
// through the bootstrap store; the communicator is created non-blocking so that init and every
// op can be bounded by CommOptions::timeout (on expiry: ncclCommAbort and kDeadlineExceeded).
// Ops run in issue order on the communicator's own stream, after all work already queued on
// the user stream set with SetStream (default: the legacy default stream). Work::Wait polls
// the op's CUDA event and ncclCommGetAsyncError. Send/Recv share that one stream, so a pair
// of ranks must issue matching sends/receives in the same order (A: send, recv; B: recv, send).
// The destructor finalizes a healthy comm (ncclCommFinalize, then ncclCommDestroy once NCCL is
// done, within CommOptions::timeout, else ncclCommAbort) and aborts a failed one.
#pragma once

#include <memory>

#include "comm/bootstrap/bootstrap.h"
#include "comm/communicator.h"
#include "comm/options.h"

namespace gantry::comm {

class NcclCommunicator : public Communicator {
 public:
  // Uses device options.cuda_device, or rank % visible devices when -1.
  static StatusOr<std::unique_ptr<NcclCommunicator>> Create(Bootstrap& bootstrap,
                                                            const CommOptions& options);
  ~NcclCommunicator() override;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string_view backend() const override { return "nccl"; }
  MemoryKind memory() const override { return MemoryKind::kCuda; }
  int device() const;
  // Later ops wait for work queued on `cuda_stream` (a cudaStream_t) at issue time.
  void SetStream(void* cuda_stream);

  WorkPtr Allreduce(const void* send, void* recv, size_t count, DataType dtype,
                    ReduceOp op) override;
  WorkPtr Broadcast(void* data, size_t count, DataType dtype, int root) override;
  WorkPtr Allgather(const void* send, void* recv, size_t count, DataType dtype) override;
  WorkPtr ReduceScatter(const void* send, void* recv, size_t count, DataType dtype,
                        ReduceOp op) override;
  WorkPtr Send(const void* data, size_t count, DataType dtype, int peer, uint32_t tag) override;
  WorkPtr Recv(void* data, size_t count, DataType dtype, int peer, uint32_t tag) override;
  WorkPtr Barrier() override;
  void Abort(const Status& reason) override;
  Status AsyncError() const override;

 private:
  struct Impl;
  explicit NcclCommunicator(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
  int rank_ = 0, size_ = 1;
};

}  // namespace gantry::comm
