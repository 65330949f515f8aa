// HierarchicalCommunicator ("hier", what auto picks when a job spans hosts with several ranks
// per host): collectives reduce inside each host over shm, combine across hosts over a tcp
// ring among one leader per host, then broadcast inside each host. Point-to-point goes over a
// tcp mesh of all ranks. Reduce-scatter is an allreduce plus a local copy (simple, not
// bandwidth-optimal). See comm/communicator.h for the contract.
#pragma once

#include <memory>
#include <vector>

#include "comm/bootstrap/bootstrap.h"
#include "comm/communicator.h"
#include "comm/lane.h"
#include "comm/options.h"

namespace gantry::comm {

class HierarchicalCommunicator : public Communicator {
 public:
  static StatusOr<std::unique_ptr<HierarchicalCommunicator>> Create(Bootstrap& bootstrap,
                                                                    const CommOptions& options);
  ~HierarchicalCommunicator() override;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string_view backend() const override { return "hier"; }
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
  HierarchicalCommunicator() = default;
  Status RunAllreduce(const void* send, void* recv, size_t count, DataType dtype, ReduceOp op);
  Status RunBroadcast(void* data, size_t count, DataType dtype, int root);
  Status RunAllgather(const void* send, void* recv, size_t count, DataType dtype);
  Status Finish(WorkPtr w) { return w->Wait(options_.timeout + std::chrono::seconds(5)); }

  int rank_ = 0, size_ = 1;
  CommOptions options_;
  std::vector<int> host_of_;        // global rank -> host index
  std::vector<int> local_index_;    // global rank -> rank inside its host
  std::vector<std::vector<int>> members_;  // host -> global ranks
  std::unique_ptr<Bootstrap> local_boot_, leader_boot_;
  std::unique_ptr<Communicator> local_, leaders_, global_;
  std::shared_ptr<CommState> state_;
  std::unique_ptr<Lane> lane_;
  std::vector<char> scratch_, scratch2_;
};

}  // namespace gantry::comm
