// TcpCommunicator: collectives over a TCP ring (works within and across hosts) and
// point-to-point over a full mesh of one socket per pair. Connections are made once, at
// Create, through the bootstrap store (each rank publishes host:port). Collectives run in
// order on one lane (progress thread); sends and receives each have their own lane, so a
// Send/Recv pair between two ranks cannot deadlock. See comm/communicator.h for the contract.
#pragma once

#include <memory>
#include <vector>

#include "comm/bootstrap/bootstrap.h"
#include "comm/communicator.h"
#include "comm/lane.h"
#include "comm/options.h"
#include "comm/tcp/ring_engine.h"

namespace gantry::comm {

class TcpCommunicator : public Communicator {
 public:
  static StatusOr<std::unique_ptr<TcpCommunicator>> Create(Bootstrap& bootstrap,
                                                           const CommOptions& options);
  ~TcpCommunicator() override;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string_view backend() const override { return "tcp"; }
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
  enum class Kind : uint8_t { kAllreduce, kBroadcast, kAllgather, kReduceScatter, kBarrier };
  struct OpHeader {  // sent to the next rank before each collective; must match ours
    uint32_t magic;
    uint8_t kind, dtype, op, pad;
    uint64_t seq;
    uint64_t count;
    int32_t root;
    int32_t pad2;
  };

  TcpCommunicator(int rank, int size, const CommOptions& options);
  Status Connect(Bootstrap& bootstrap);
  // Runs one collective on the collective lane: header exchange + the plan built by `build`.
  WorkPtr SubmitCollective(OpLabel label, Kind kind, int root,
                           std::function<Status(RingPlan*)> build);
  Status RunCollective(const OpLabel& label, const OpHeader& mine,
                       const std::function<Status(RingPlan*)>& build);
  Status CheckHeader(const OpLabel& label, const OpHeader& mine) const;
  Status CheckArgs(const char* op, size_t count, int root_or_peer) const;
  void CloseAll();

  int rank_, size_;
  CommOptions options_;
  std::vector<Socket> to_next_, from_prev_;
  std::vector<Socket> p2p_;  // index = peer rank
  std::shared_ptr<CommState> state_;
  std::unique_ptr<Lane> coll_lane_, send_lane_, recv_lane_;
  uint64_t seq_ = 0, send_seq_ = 0, recv_seq_ = 0;
  // Touched only by the collective lane.
  RingEngine engine_;
  RingPlan plan_;
  OpHeader their_header_{};
  std::vector<char> scratch_;
};

}  // namespace gantry::comm
