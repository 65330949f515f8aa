// HierarchicalCommunicator: host grouping at Create, and each collective as three sub-steps
// (inside host, across leaders, inside host) run in order on one lane.
#include "comm/hierarchical/hierarchical_communicator.h"

#include <cstring>
#include <map>

#include "comm/reduce.h"
#include "comm/shm/shm_communicator.h"
#include "comm/tcp/tcp_communicator.h"

namespace gantry::comm {

StatusOr<std::unique_ptr<HierarchicalCommunicator>> HierarchicalCommunicator::Create(
    Bootstrap& bootstrap, const CommOptions& options) {
  std::unique_ptr<HierarchicalCommunicator> c(new HierarchicalCommunicator());
  c->rank_ = bootstrap.rank();
  c->size_ = bootstrap.size();
  c->options_ = options;
  auto scope = bootstrap.NewScope("hier");
  GANTRY_ASSIGN_OR_RETURN(auto hosts,
                          bootstrap.AllGather(*scope, "host", Bootstrap::HostId(), options.timeout));
  std::map<std::string, int> index;
  for (int r = 0; r < c->size_; ++r) {
    auto [it, added] = index.emplace(hosts[r], static_cast<int>(index.size()));
    if (added) c->members_.emplace_back();
    c->host_of_.push_back(it->second);
    c->local_index_.push_back(static_cast<int>(c->members_[it->second].size()));
    c->members_[it->second].push_back(r);
  }
  const int h = c->host_of_[c->rank_], li = c->local_index_[c->rank_];
  c->local_boot_ = bootstrap.Sub("host" + std::to_string(h), li, c->members_[h].size());
  c->leader_boot_ = bootstrap.Sub("leaders", h, c->members_.size());
  GANTRY_ASSIGN_OR_RETURN(c->global_, TcpCommunicator::Create(bootstrap, options));
  GANTRY_ASSIGN_OR_RETURN(c->local_, ShmCommunicator::Create(*c->local_boot_, options));
  if (li == 0) {
    GANTRY_ASSIGN_OR_RETURN(c->leaders_, TcpCommunicator::Create(*c->leader_boot_, options));
  }
  c->state_ = std::make_shared<CommState>();
  c->lane_ = std::make_unique<Lane>("hier collectives", c->state_);
  c->lane_->set_on_failure([p = c.get()](const Status& s) { p->Abort(s); });
  return c;
}

HierarchicalCommunicator::~HierarchicalCommunicator() { lane_.reset(); }

void HierarchicalCommunicator::Abort(const Status& reason) {
  state_->Fail(AbortedError("hier communicator aborted: " + reason.ToString()));
  for (auto* c : {local_.get(), leaders_.get(), global_.get()}) {
    if (c) c->Abort(reason);
  }
}

Status HierarchicalCommunicator::AsyncError() const {
  if (state_->failed()) return state_->error();
  for (auto* c : {local_.get(), leaders_.get(), global_.get()}) {
    if (c && !c->AsyncError().ok()) return c->AsyncError();
  }
  return OkStatus();
}

Status HierarchicalCommunicator::RunAllreduce(const void* send, void* recv, size_t count,
                                              DataType dtype, ReduceOp op) {
  const ReduceOp step_op = op == ReduceOp::kAvg ? ReduceOp::kSum : op;
  GANTRY_RETURN_IF_ERROR(Finish(local_->Allreduce(send, recv, count, dtype, step_op)));
  if (leaders_) GANTRY_RETURN_IF_ERROR(Finish(leaders_->Allreduce(recv, recv, count, dtype, step_op)));
  GANTRY_RETURN_IF_ERROR(Finish(local_->Broadcast(recv, count, dtype, 0)));
  if (op == ReduceOp::kAvg) FinishAverage(recv, count, dtype, size_);
  return OkStatus();
}

Status HierarchicalCommunicator::RunBroadcast(void* data, size_t count, DataType dtype, int root) {
  const int root_host = host_of_[root];
  const bool on_root_host = host_of_[rank_] == root_host;
  if (on_root_host) {
    GANTRY_RETURN_IF_ERROR(Finish(local_->Broadcast(data, count, dtype, local_index_[root])));
  }
  if (leaders_) GANTRY_RETURN_IF_ERROR(Finish(leaders_->Broadcast(data, count, dtype, root_host)));
  if (!on_root_host) GANTRY_RETURN_IF_ERROR(Finish(local_->Broadcast(data, count, dtype, 0)));
  return OkStatus();
}

Status HierarchicalCommunicator::RunAllgather(const void* send, void* recv, size_t count,
                                              DataType dtype) {
  const size_t es = DataTypeSize(dtype), block = count * es;
  size_t max_local = 0;
  for (const auto& m : members_) max_local = std::max(max_local, m.size());
  const int h = host_of_[rank_];
  // Local gather into a host block padded to max_local ranks, then gather blocks across hosts.
  if (scratch_.size() < max_local * block) scratch_.resize(max_local * block);
  GANTRY_RETURN_IF_ERROR(Finish(local_->Allgather(send, scratch_.data(), count, dtype)));
  if (leaders_) {
    if (scratch2_.size() < members_.size() * max_local * block) {
      scratch2_.resize(members_.size() * max_local * block);
    }
    GANTRY_RETURN_IF_ERROR(
        Finish(leaders_->Allgather(scratch_.data(), scratch2_.data(), max_local * count, dtype)));
    char* out = static_cast<char*>(recv);
    for (size_t host = 0; host < members_.size(); ++host) {
      for (size_t i = 0; i < members_[host].size(); ++i) {
        std::memcpy(out + members_[host][i] * block, scratch2_.data() + (host * max_local + i) * block,
                    block);
      }
    }
  }
  (void)h;
  return Finish(local_->Broadcast(recv, size_ * count, dtype, 0));
}

WorkPtr HierarchicalCommunicator::Allreduce(const void* send, void* recv, size_t count,
                                            DataType dtype, ReduceOp op) {
  return lane_->Submit([=, this] { return RunAllreduce(send, recv, count, dtype, op); });
}

WorkPtr HierarchicalCommunicator::Broadcast(void* data, size_t count, DataType dtype, int root) {
  if (root < 0 || root >= size_) {
    return MakeDoneWork(InvalidArgumentError("broadcast: root " + std::to_string(root) +
                                             " is outside 0.." + std::to_string(size_ - 1)));
  }
  return lane_->Submit([=, this] { return RunBroadcast(data, count, dtype, root); });
}

WorkPtr HierarchicalCommunicator::Allgather(const void* send, void* recv, size_t count,
                                            DataType dtype) {
  return lane_->Submit([=, this] { return RunAllgather(send, recv, count, dtype); });
}

WorkPtr HierarchicalCommunicator::ReduceScatter(const void* send, void* recv, size_t count,
                                                DataType dtype, ReduceOp op) {
  return lane_->Submit([=, this] {
    const size_t bytes = count * DataTypeSize(dtype);
    if (scratch_.size() < bytes * size_) scratch_.resize(bytes * size_);
    GANTRY_RETURN_IF_ERROR(RunAllreduce(send, scratch_.data(), count * size_, dtype, op));
    std::memmove(recv, scratch_.data() + rank_ * bytes, bytes);
    return OkStatus();
  });
}

WorkPtr HierarchicalCommunicator::Barrier() {
  return lane_->Submit([this] {
    GANTRY_RETURN_IF_ERROR(Finish(local_->Barrier()));
    if (leaders_) GANTRY_RETURN_IF_ERROR(Finish(leaders_->Barrier()));
    return Finish(local_->Barrier());
  });
}

WorkPtr HierarchicalCommunicator::Send(const void* data, size_t count, DataType dtype, int peer,
                                       uint32_t tag) {
  return global_->Send(data, count, dtype, peer, tag);
}

WorkPtr HierarchicalCommunicator::Recv(void* data, size_t count, DataType dtype, int peer,
                                       uint32_t tag) {
  return global_->Recv(data, count, dtype, peer, tag);
}

}  // namespace gantry::comm
