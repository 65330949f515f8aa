// MpiCommunicator: Open MPI's collectives (MPI_Iallreduce, MPI_Ibcast, ...) on a duplicate of
// MPI_COMM_WORLD, for jobs started by mpirun. Operations are issued at once from the calling
// thread; Work::Wait drives MPI progress (MPI_Test) until done or the op's deadline. bf16/f16
// use user-defined MPI ops built on comm/reduce.h; avg is sum then a local division. MPI
// cannot tell which rank is missing, so a timeout names the op and sequence number only.
// All MPI calls are serialised by one process-wide mutex (needs only MPI_THREAD_SERIALIZED).
#pragma once

#include <memory>

#include "comm/communicator.h"
#include "comm/lane.h"
#include "comm/options.h"

namespace gantry::comm {

class MpiCommunicator : public Communicator {
 public:
  // Initialises MPI if needed (see EnsureMpiInitialized). kUnavailable when not under mpirun.
  static StatusOr<std::unique_ptr<MpiCommunicator>> Create(const CommOptions& options);
  ~MpiCommunicator() override;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string_view backend() const override { return "mpi"; }
  MemoryKind memory() const override { return MemoryKind::kHost; }

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
  explicit MpiCommunicator(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
  int rank_ = 0, size_ = 1;
};

}  // namespace gantry::comm
