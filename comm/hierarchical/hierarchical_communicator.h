// HierarchicalCommunicator ("hier", what auto picks when a job spans hosts with several ranks
// per host): collectives reduce inside each host over shm, combine across hosts over a tcp
// ring among one leader per host, then broadcast inside each host. Point-to-point goes over a
// tcp mesh of all ranks. Reduce-scatter sends each byte across hosts once: shm allreduce of
// the host-major input, tcp reduce-scatter among leaders, shm broadcast of the host's part.
// Errors name the hierarchical op and always the GLOBAL rank of a peer (a dead host-mate, or
// the leader of another host). See comm/communicator.h for the contract.
#pragma once

#include <functional>
#include <memory>
#include <string>
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
  // This host's shm symmetric memory (null on a host with one rank): the in-host step of an
  // in-place allreduce on it runs without staging copies.
  StatusOr<std::shared_ptr<void>> AllocateSymmetric(size_t bytes) override;
  void Abort(const Status& reason) override;
  Status AsyncError() const override;

 private:
  HierarchicalCommunicator() = default;
  Status RunAllreduce(const void* send, void* recv, size_t count, DataType dtype, ReduceOp op);
  Status RunBroadcast(void* data, size_t count, DataType dtype, int root);
  Status RunAllgather(const void* send, void* recv, size_t count, DataType dtype);
  Status RunReduceScatter(const void* send, void* recv, size_t count, DataType dtype,
                          ReduceOp op);
  // Waits for one step inside this host (shm) or across host leaders (tcp) and says where
  // it failed, with leader-ring rank numbers turned into global ranks.
  Status Local(WorkPtr w);
  Status Leaders(WorkPtr w);
  WorkPtr Submit(OpLabel label, std::function<Status()> run);

  int rank_ = 0, size_ = 1;
  CommOptions options_;
  std::vector<int> host_of_;        // global rank -> host index
  std::vector<int> local_index_;    // global rank -> rank inside its host
  std::vector<std::vector<int>> members_;  // host -> global ranks
  std::vector<std::string> host_names_;    // host -> its id (hostname/boot id or GANTRY_HOST_ID)
  uint64_t seq_ = 0;
  std::unique_ptr<Bootstrap> local_boot_, leader_boot_;
  std::unique_ptr<Communicator> local_, leaders_, global_;
  std::shared_ptr<CommState> state_;
  std::unique_ptr<Lane> lane_;
  std::vector<char> scratch_, scratch2_;
};

}  // namespace gantry::comm
