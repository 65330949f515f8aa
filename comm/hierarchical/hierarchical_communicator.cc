// HierarchicalCommunicator: host grouping at Create, and each collective as sub-steps (inside
// host over shm, across leaders over tcp, inside host) run in order on one lane.
#include "comm/hierarchical/hierarchical_communicator.h"

#include <algorithm>
#include <cstring>
#include <map>
#include <regex>

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
    if (added) {
      c->members_.emplace_back();
      c->host_names_.push_back(hosts[r]);
    }
    c->host_of_.push_back(it->second);
    c->local_index_.push_back(static_cast<int>(c->members_[it->second].size()));
    c->members_[it->second].push_back(r);
  }
  const int h = c->host_of_[c->rank_], li = c->local_index_[c->rank_];
  c->local_boot_ = bootstrap.Sub("host" + std::to_string(h), li, c->members_[h].size());
  c->leader_boot_ = bootstrap.Sub("leaders", h, c->members_.size());
  c->report_boot_ = bootstrap.Sub("leader-reports", h, c->members_.size());
  GANTRY_ASSIGN_OR_RETURN(c->global_, TcpCommunicator::Create(bootstrap, options));
  GANTRY_ASSIGN_OR_RETURN(auto local, ShmCommunicator::Create(*c->local_boot_, options));
  local->NameRanks(c->members_[h]);  // shm errors name host-mates by their global rank
  c->local_shm_ = local.get();
  c->local_ = std::move(local);
  if (li == 0) {
    GANTRY_ASSIGN_OR_RETURN(c->leaders_, TcpCommunicator::Create(*c->leader_boot_, options));
    if (c->members_.size() > 1) {
      GANTRY_ASSIGN_OR_RETURN(c->reporter_, TcpCommunicator::Create(*c->report_boot_, options));
      c->reports_.resize(c->members_.size());
    }
  }
  c->state_ = std::make_shared<CommState>();
  c->lane_ = std::make_unique<Lane>("hier collectives", c->state_);
  c->send_lane_ = std::make_unique<Lane>("hier sends", c->state_);
  c->recv_lane_ = std::make_unique<Lane>("hier receives", c->state_);
  for (Lane* l : {c->lane_.get(), c->send_lane_.get(), c->recv_lane_.get()}) {
    l->set_on_failure([p = c.get()](const Status& s) { p->Abort(s); });
  }
  // A Wait as long as the op's own timeout runs a send or receive on the waiting thread (and
  // global_'s lanes do the same): no extra thread handoff for going through this lane.
  c->send_lane_->set_inline_waits(options.timeout);
  c->recv_lane_->set_inline_waits(options.timeout);
  return c;
}

HierarchicalCommunicator::~HierarchicalCommunicator() {
  // Ops still in flight end now, not at their deadline (see TcpCommunicator's destructor).
  if (Lane::AnyBusy({&lane_, &send_lane_, &recv_lane_})) Abort(DestroyedInFlightError());
  lane_.reset();
  send_lane_.reset();
  recv_lane_.reset();
}

void HierarchicalCommunicator::Abort(const Status& reason) {
  state_->Fail(AbortedError("hier communicator aborted: " + reason.ToString()));
  for (auto* c : {local_.get(), leaders_.get(), reporter_.get(), global_.get()}) {
    if (c) c->Abort(reason);
  }
}

Status HierarchicalCommunicator::AsyncError() const {
  if (state_->failed()) return state_->error();
  for (auto* c : {local_.get(), leaders_.get(), reporter_.get(), global_.get()}) {
    if (c && !c->AsyncError().ok()) return c->AsyncError();
  }
  return OkStatus();
}

Status HierarchicalCommunicator::Local(WorkPtr w) {
  Status s = w->Wait(options_.timeout + std::chrono::seconds(5));
  if (s.ok()) return s;
  const int h = host_of_[rank_];
  return s.Prepend("inside host " + host_names_[h] + " (shm, global ranks)");
}

Status HierarchicalCommunicator::Leaders(WorkPtr w) {
  Status s = w->Wait(options_.timeout + std::chrono::seconds(5));
  if (s.ok()) return s;
  // The leader ring numbers its ranks by host; say which global rank each one is.
  static const std::regex kRank(R"(\brank (\d+))");
  const std::string& m = s.message();
  std::string out;
  auto last = m.cbegin();
  for (std::sregex_iterator it(m.begin(), m.end(), kRank), end; it != end; ++it) {
    out.append(last, (*it)[0].first);
    const size_t host = std::stoul((*it)[1].str());
    out += host < members_.size() ? "rank " + std::to_string(members_[host][0]) + " (leader of host " +
                                        host_names_[host] + ")"
                                  : (*it)[0].str();
    last = (*it)[0].second;
  }
  out.append(last, m.cend());
  return Status(s.code(), "across hosts (tcp ring of host leaders, global ranks): " + out);
}

WorkPtr HierarchicalCommunicator::Submit(OpLabel label, OpArgs args, std::function<Status()> run) {
  label.seq = ++seq_;
  args.seq = label.seq;
  args.count = label.count;
  args.dtype = label.dtype;
  return lane_->Submit([this, name = label.ToString(), args, run = std::move(run)] {
    op_ = args;
    // The host-mates compare this in the shm steps' descriptors: a step's own op and root
    // (sum for avg, local root 0 on other hosts) do not show what the caller asked for.
    local_shm_->SetStepOf({args.kind, static_cast<uint8_t>(args.op), args.root});
    Status s = run();
    if (!s.ok()) s.Prepend(name);
    return s;
  });
}

Status HierarchicalCommunicator::Across(const Status& before,
                                        const std::function<WorkPtr()>& issue) {
  if (!leaders_) return before;
  if (!reporter_) {  // one host
    GANTRY_RETURN_IF_ERROR(before);
    return Leaders(issue());
  }
  StartReports(before);
  if (!before.ok()) {
    // The other leaders learn why this host stops instead of "closed the connection": this
    // rank closes its sockets only once they have its report and it has theirs.
    for (auto* works : {&report_sends_, &report_recvs_}) {
      for (auto& w : *works) w->Wait(options_.timeout + std::chrono::seconds(5)).IgnoreError();
    }
    return before;
  }
  // The tcp step runs on this thread (no handoff) while the reports travel on reporter_'s
  // lanes; a failed step (a peer that stopped closes its sockets) leaves them readable.
  const Status step = Leaders(issue());
  Status problem, transport;
  CheckReports(problem, transport);
  // The most telling first: what another leader said, then the step, then a lost report.
  if (!problem.ok()) return problem;
  return step.ok() ? transport : step;
}

void HierarchicalCommunicator::StartReports(const Status& before) {
  static constexpr uint32_t kMagic = 0x68726570;  // "hrep"
  report_ = LeaderReport{kMagic, op_.kind, static_cast<uint8_t>(op_.dtype),
                         static_cast<uint8_t>(op_.op), 0, op_.seq, op_.count, op_.root,
                         static_cast<int32_t>(before.code())};
  if (!before.ok()) {
    const std::string why = before.ToString();
    std::strncpy(report_.reason, why.c_str(), sizeof(report_.reason) - 1);
  }
  constexpr size_t kWords = sizeof(LeaderReport) / sizeof(int32_t);
  static_assert(sizeof(LeaderReport) % sizeof(int32_t) == 0);
  report_sends_.clear();
  report_recvs_.clear();
  const int self = host_of_[rank_];
  for (int h = 0; h < static_cast<int>(members_.size()); ++h) {
    if (h == self) continue;
    report_sends_.push_back(reporter_->Send(&report_, kWords, DataType::kI32, h, 0));
    report_recvs_.push_back(reporter_->Recv(&reports_[h], kWords, DataType::kI32, h, 0));
  }
}

void HierarchicalCommunicator::CheckReports(Status& problem, Status& transport) {
  // Every report is in (and this one out) before this rank can fail on one of them and close
  // its sockets, so the other leaders all read the same reports and fail the same way.
  for (auto& w : report_sends_) {
    if (Status s = Leaders(w); !s.ok() && transport.ok()) transport = s;
  }
  const int self = host_of_[rank_];
  for (int h = 0, i = 0; h < static_cast<int>(members_.size()); ++h) {
    if (h == self) continue;
    if (Status s = Leaders(report_recvs_[i++]); !s.ok()) {
      if (transport.ok()) transport = s;
    } else if (problem.ok()) {
      problem = CheckReport(h, reports_[h]);
    }
  }
}

Status HierarchicalCommunicator::CheckReport(int host, const LeaderReport& r) const {
  const std::string who = "across hosts: rank " + std::to_string(members_[host][0]) +
                          " (leader of host " + host_names_[host] + ")";
  if (r.code != 0) {
    const std::string msg = who + " failed inside its host: " +
                            std::string(r.reason, strnlen(r.reason, sizeof(r.reason)));
    // A mismatch found there is one here too; anything else broke that host.
    return r.code == static_cast<int32_t>(StatusCode::kFailedPrecondition)
               ? FailedPreconditionError(msg)
               : UnavailableError(msg);
  }
  // Worded as the shm descriptors are ("op avg there, sum here").
  const ShmOpMeta theirs{r.seq, r.count, r.kind, r.dtype, r.op, 0, r.root};
  const ShmOpMeta mine{report_.seq, report_.count, report_.kind, report_.dtype, report_.op, 0,
                       report_.root};
  if (r.magic != report_.magic || !(theirs == mine)) {
    return FailedPreconditionError(
        who + " issued " + DescribeShmOp(theirs) + " (" + ShmOpDifferences(theirs, mine) +
        "); every rank must call the same collectives in the same order with the same arguments");
  }
  return OkStatus();
}

Status HierarchicalCommunicator::RunAllreduce(const void* send, void* recv, size_t count,
                                              DataType dtype, ReduceOp op) {
  const ReduceOp step_op = op == ReduceOp::kAvg ? ReduceOp::kSum : op;
  const Status local = Local(local_->Allreduce(send, recv, count, dtype, step_op));
  GANTRY_RETURN_IF_ERROR(
      Across(local, [&] { return leaders_->Allreduce(recv, recv, count, dtype, step_op); }));
  GANTRY_RETURN_IF_ERROR(Local(local_->Broadcast(recv, count, dtype, 0)));
  if (op == ReduceOp::kAvg) FinishAverage(recv, count, dtype, size_);
  return OkStatus();
}

// Host-major layout: host h's members' blocks are contiguous and padded to `max_local` blocks,
// so the leaders' reduce-scatter hands each leader exactly its host's blocks (each byte
// crosses the network once, against twice for an allreduce), and the final broadcast inside
// a host carries 1/hosts of the data.
Status HierarchicalCommunicator::RunReduceScatter(const void* send, void* recv, size_t count,
                                                  DataType dtype, ReduceOp op) {
  const size_t es = DataTypeSize(dtype), block = count * es, hosts = members_.size();
  size_t max_local = 0;
  for (const auto& m : members_) max_local = std::max(max_local, m.size());
  const size_t group = max_local * block;  // one host's part, bytes
  if (scratch_.size() < hosts * group) scratch_.resize(hosts * group);
  if (scratch2_.size() < group) scratch2_.resize(group);
  const char* in = static_cast<const char*>(send);
  for (size_t h = 0; h < hosts; ++h) {
    char* part = scratch_.data() + h * group;
    for (size_t i = 0; i < members_[h].size(); ++i) {
      std::memcpy(part + i * block, in + members_[h][i] * block, block);
    }
    // Padding of smaller hosts: zeros, so it reduces to finite values that are then dropped.
    std::memset(part + members_[h].size() * block, 0, (max_local - members_[h].size()) * block);
  }
  const ReduceOp step_op = op == ReduceOp::kAvg ? ReduceOp::kSum : op;
  const size_t n = hosts * max_local * count;
  const Status local =
      Local(local_->Allreduce(scratch_.data(), scratch_.data(), n, dtype, step_op));
  GANTRY_RETURN_IF_ERROR(Across(local, [&] {
    return leaders_->ReduceScatter(scratch_.data(), scratch2_.data(), max_local * count, dtype,
                                   step_op);
  }));
  GANTRY_RETURN_IF_ERROR(Local(local_->Broadcast(scratch2_.data(), max_local * count, dtype, 0)));
  std::memcpy(recv, scratch2_.data() + local_index_[rank_] * block, block);
  if (op == ReduceOp::kAvg) FinishAverage(recv, count, dtype, size_);
  return OkStatus();
}

Status HierarchicalCommunicator::RunBroadcast(void* data, size_t count, DataType dtype, int root) {
  const int root_host = host_of_[root];
  const bool on_root_host = host_of_[rank_] == root_host;
  Status before = OkStatus();
  if (on_root_host) before = Local(local_->Broadcast(data, count, dtype, local_index_[root]));
  GANTRY_RETURN_IF_ERROR(
      Across(before, [&] { return leaders_->Broadcast(data, count, dtype, root_host); }));
  if (!on_root_host) GANTRY_RETURN_IF_ERROR(Local(local_->Broadcast(data, count, dtype, 0)));
  return OkStatus();
}

Status HierarchicalCommunicator::RunAllgather(const void* send, void* recv, size_t count,
                                              DataType dtype) {
  const size_t es = DataTypeSize(dtype), block = count * es;
  size_t max_local = 0;
  for (const auto& m : members_) max_local = std::max(max_local, m.size());
  // Local gather into a host block padded to max_local ranks, then gather blocks across hosts.
  if (scratch_.size() < max_local * block) scratch_.resize(max_local * block);
  const Status local = Local(local_->Allgather(send, scratch_.data(), count, dtype));
  if (leaders_ && scratch2_.size() < members_.size() * max_local * block) {
    scratch2_.resize(members_.size() * max_local * block);
  }
  GANTRY_RETURN_IF_ERROR(Across(local, [&] {
    return leaders_->Allgather(scratch_.data(), scratch2_.data(), max_local * count, dtype);
  }));
  if (leaders_) {
    char* out = static_cast<char*>(recv);
    for (size_t host = 0; host < members_.size(); ++host) {
      for (size_t i = 0; i < members_[host].size(); ++i) {
        std::memcpy(out + members_[host][i] * block, scratch2_.data() + (host * max_local + i) * block,
                    block);
      }
    }
  }
  return Local(local_->Broadcast(recv, size_ * count, dtype, 0));
}

Status HierarchicalCommunicator::RunBarrier() {
  const Status local = Local(local_->Barrier());
  GANTRY_RETURN_IF_ERROR(Across(local, [&] { return leaders_->Barrier(); }));
  return Local(local_->Barrier());
}

WorkPtr HierarchicalCommunicator::Allreduce(const void* send, void* recv, size_t count,
                                            DataType dtype, ReduceOp op) {
  return Submit({"allreduce", 0, count, dtype, std::string(ReduceOpName(op))},
                {.kind = kShmAllreduce, .op = op},
                [=, this] { return RunAllreduce(send, recv, count, dtype, op); });
}

WorkPtr HierarchicalCommunicator::Broadcast(void* data, size_t count, DataType dtype, int root) {
  if (root < 0 || root >= size_) {
    return MakeDoneWork(InvalidArgumentError("broadcast: root " + std::to_string(root) +
                                             " is outside 0.." + std::to_string(size_ - 1)));
  }
  return Submit({"broadcast", 0, count, dtype, "root " + std::to_string(root)},
                {.kind = kShmBroadcast, .root = root},
                [=, this] { return RunBroadcast(data, count, dtype, root); });
}

WorkPtr HierarchicalCommunicator::Allgather(const void* send, void* recv, size_t count,
                                            DataType dtype) {
  return Submit({"allgather", 0, count, dtype, ""}, {.kind = kShmAllgather},
                [=, this] { return RunAllgather(send, recv, count, dtype); });
}

WorkPtr HierarchicalCommunicator::ReduceScatter(const void* send, void* recv, size_t count,
                                                DataType dtype, ReduceOp op) {
  return Submit({"reduce_scatter", 0, count, dtype, std::string(ReduceOpName(op))},
                {.kind = kShmReduceScatter, .op = op},
                [=, this] { return RunReduceScatter(send, recv, count, dtype, op); });
}

WorkPtr HierarchicalCommunicator::Barrier() {
  return Submit({"barrier", 0, 0, DataType::kI32, ""}, {.kind = kShmBarrier},
                [this] { return RunBarrier(); });
}

StatusOr<std::shared_ptr<void>> HierarchicalCommunicator::AllocateSymmetric(size_t bytes) {
  // On the lane, so local_ keeps a single issuing thread and the call is ordered with the
  // collectives; every host allocates among its own ranks.
  std::shared_ptr<void> out;
  WorkPtr w = Submit({"allocate_symmetric", 0, bytes, DataType::kI32, ""}, {},
                     [&, bytes]() -> Status {
    GANTRY_ASSIGN_OR_RETURN(out, local_->AllocateSymmetric(bytes));
    return OkStatus();
  });
  GANTRY_RETURN_IF_ERROR(w->Wait());
  return out;
}

Status HierarchicalCommunicator::CheckPeer(const char* what, int peer, size_t count) const {
  if (peer < 0 || peer >= size_ || peer == rank_) {
    return InvalidArgumentError(std::string(what) + ": peer " + std::to_string(peer) +
                                " must be another rank in 0.." + std::to_string(size_ - 1) +
                                " (this is rank " + std::to_string(rank_) + ")");
  }
  if (count > (1ull << 40)) {
    return InvalidArgumentError(std::string(what) + ": count " + std::to_string(count) +
                                " is too large");
  }
  return OkStatus();
}

// Sends and receives run on this communicator's own lanes (which share its state), so a
// failed one breaks the whole communicator: its Abort poisons the host's shm segment and
// closes the leaders' sockets, and every rank's next collective fails at once. Before, a
// failure stayed inside global_ and the next collectives succeeded.
WorkPtr HierarchicalCommunicator::Send(const void* data, size_t count, DataType dtype, int peer,
                                       uint32_t tag) {
  if (Status s = CheckPeer("send", peer, count); !s.ok()) return MakeDoneWork(s);
  return send_lane_->Submit([=, this] {
    return global_->Send(data, count, dtype, peer, tag)->Wait(options_.timeout +
                                                              std::chrono::seconds(5));
  });
}

WorkPtr HierarchicalCommunicator::Recv(void* data, size_t count, DataType dtype, int peer,
                                       uint32_t tag) {
  if (Status s = CheckPeer("recv", peer, count); !s.ok()) return MakeDoneWork(s);
  return recv_lane_->Submit([=, this] {
    return global_->Recv(data, count, dtype, peer, tag)->Wait(options_.timeout +
                                                              std::chrono::seconds(5));
  });
}

}  // namespace gantry::comm
