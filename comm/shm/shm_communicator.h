// ShmCommunicator: all ranks on one host; collectives and point-to-point move through one
// POSIX shared-memory segment (no sockets in the data path; the bootstrap store is used only
// at Create). Collectives run on one lane, sends and receives on their own lanes. A failing
// rank poisons the segment so peers fail at once; a killed rank is noticed through its pidfd.
// See comm/communicator.h for the contract.
#pragma once

#include <memory>
#include <vector>

#include "comm/bootstrap/bootstrap.h"
#include "comm/communicator.h"
#include "comm/lane.h"
#include "comm/options.h"
#include "comm/shm/shm_group.h"
#include "comm/shm/shm_window.h"

namespace gantry::comm {

class ShmCommunicator : public Communicator, private SymmetricPeers {
 public:
  // Fails with kFailedPrecondition when the bootstrap's ranks are not all on this host.
  static StatusOr<std::unique_ptr<ShmCommunicator>> Create(Bootstrap& bootstrap,
                                                           const CommOptions& options);
  ~ShmCommunicator() override;
  // Errors name rank r as "rank names[r]" (the hierarchical backend passes global ranks).
  // Call right after Create, before the first operation.
  void NameRanks(std::vector<int> names) { group_->SetRankNames(std::move(names)); }
  // The larger collective the next collectives are steps of (hier sets it before each of its
  // own; default: none). It travels in their stage descriptors, so host-mates that disagree
  // on it fail with kFailedPrecondition. Call from the issuing thread.
  void SetStepOf(ShmStepOf step_of) { step_of_ = step_of; }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string_view backend() const override { return "shm"; }
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
  // Windows of POSIX shared memory mapped by every rank (shm_window.h); an Allreduce in place
  // on a buffer inside one runs without staging copies (shm_allreduce_window.cc).
  StatusOr<std::shared_ptr<void>> AllocateSymmetric(size_t bytes) override;
  // Peers' windows and per-rank signals in the segment (nullptr with one rank).
  SymmetricPeers* symmetric_peers() override { return size_ > 1 ? this : nullptr; }
  void Abort(const Status& reason) override;
  Status AsyncError() const override;

 private:
  ShmCommunicator(int rank, int size, const CommOptions& options);
  // `where`: the window and offset of a symmetric-memory collective (checked across ranks).
  WorkPtr SubmitCollective(OpLabel label, uint8_t kind, uint8_t op, int root,
                           std::function<Status(const ShmGroup::Op&)> run,
                           std::optional<ShmWindows::Where> where = std::nullopt);
  WorkPtr SubmitP2p(Lane* lane, OpLabel label, std::function<Status(const ShmGroup::Op&)> run);
  Status CheckRank(const char* what, int r, bool allow_self) const;
  // SymmetricPeers.
  const void* Peer(const void* p, size_t bytes, int r) const override;
  void Signal(int slot, uint64_t value) override;
  uint64_t PeekSignal(int r, int slot) const override;
  Status WaitSignal(int r, int slot, uint64_t value, std::chrono::milliseconds timeout,
                    const std::string& what) override;

  int rank_, size_;
  CommOptions options_;
  std::unique_ptr<ShmGroup> group_;
  ShmWindows windows_;
  std::shared_ptr<CommState> state_;
  std::unique_ptr<Lane> coll_lane_, send_lane_, recv_lane_;
  uint64_t seq_ = 0, send_seq_ = 0, recv_seq_ = 0;
  ShmStepOf step_of_;
};

}  // namespace gantry::comm
