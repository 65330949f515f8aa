// HierarchicalCommunicator ("hier", what auto picks when a job spans hosts with several ranks
// per host): collectives reduce inside each host over shm, combine across hosts over a tcp
// ring among one leader per host, then broadcast inside each host. Point-to-point goes over a
// tcp mesh of all ranks. Reduce-scatter sends each byte across hosts once: shm allreduce of
// the host-major input, tcp reduce-scatter among leaders, shm broadcast of the host's part.
// Errors name the hierarchical op and always the GLOBAL rank of a peer (a dead host-mate, or
// the leader of another host). Mismatched arguments fail with kFailedPrecondition: host-mates
// compare the collective's own kind/op/root in the shm stage descriptors, and each leader
// sends the others a report (arguments, and how its host's part went) beside its tcp step.
// A failed send or receive breaks the communicator like a failed collective. See
// comm/communicator.h for the contract.
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

class ShmCommunicator;

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
  // What every rank must agree on for one collective (kind: a ShmKind).
  struct OpArgs {
    uint8_t kind = 0;
    uint64_t seq = 0, count = 0;
    DataType dtype = DataType::kF32;
    ReduceOp op = ReduceOp::kSum;
    int32_t root = -1;
  };
  // A leader's word to the other leaders about the current collective (fixed size, so it
  // travels as one tcp message): its arguments, and how its host's steps so far went.
  struct LeaderReport {
    uint32_t magic = 0;
    uint8_t kind = 0, dtype = 0, op = 0, pad = 0;
    uint64_t seq = 0, count = 0;
    int32_t root = -1;
    int32_t code = 0;  // StatusCode of this host's steps before the leaders' step (0: OK)
    char reason[992] = {};
  };

  HierarchicalCommunicator() = default;
  Status RunAllreduce(const void* send, void* recv, size_t count, DataType dtype, ReduceOp op);
  Status RunBroadcast(void* data, size_t count, DataType dtype, int root);
  Status RunAllgather(const void* send, void* recv, size_t count, DataType dtype);
  Status RunReduceScatter(const void* send, void* recv, size_t count, DataType dtype,
                          ReduceOp op);
  Status RunBarrier();
  // Waits for one step inside this host (shm) or across host leaders (tcp) and says where
  // it failed, with leader-ring rank numbers turned into global ranks.
  Status Local(WorkPtr w);
  Status Leaders(WorkPtr w);
  // The step across hosts: on leaders, sends this host's report (`before`: its steps so far)
  // to every other leader, runs the tcp step from `issue` meanwhile, then checks their
  // reports. Elsewhere returns `before`.
  Status Across(const Status& before, const std::function<WorkPtr()>& issue);
  void StartReports(const Status& before);
  // Waits for the reports: `problem` is the first a report shows, `transport` the first
  // report that could not be sent or received.
  void CheckReports(Status& problem, Status& transport);
  Status CheckReport(int host, const LeaderReport& report) const;
  WorkPtr Submit(OpLabel label, OpArgs args, std::function<Status()> run);
  Status CheckPeer(const char* what, int peer, size_t count) const;

  int rank_ = 0, size_ = 1;
  CommOptions options_;
  std::vector<int> host_of_;        // global rank -> host index
  std::vector<int> local_index_;    // global rank -> rank inside its host
  std::vector<std::vector<int>> members_;  // host -> global ranks
  std::vector<std::string> host_names_;    // host -> its id (hostname/boot id or GANTRY_HOST_ID)
  uint64_t seq_ = 0;
  OpArgs op_;  // the collective the lane runs now (lane thread only)
  // Leaders' reports (index: host); outlive reporter_, whose lanes fill them.
  LeaderReport report_;
  std::vector<LeaderReport> reports_;
  std::vector<WorkPtr> report_sends_, report_recvs_;
  std::unique_ptr<Bootstrap> local_boot_, leader_boot_, report_boot_;
  // reporter_: the leaders' reports (its own sockets, so a failed tcp step on leaders_ does
  // not cut off the report that says why); leaders with more than one host only.
  std::unique_ptr<Communicator> local_, leaders_, reporter_, global_;
  ShmCommunicator* local_shm_ = nullptr;  // local_
  std::shared_ptr<CommState> state_;
  // Collectives on one lane; sends and receives (over global_) on their own, sharing state_:
  // a failure on any breaks the whole communicator.
  std::unique_ptr<Lane> lane_, send_lane_, recv_lane_;
  std::vector<char> scratch_, scratch2_;
};

}  // namespace gantry::comm
