// ShmCommunicator: segment setup, op labelling and lane submission for the shm algorithms.
#include "comm/shm/shm_communicator.h"

#include <algorithm>
#include <cstring>

#include "comm/shm/shm_algorithms.h"

namespace gantry::comm {
namespace {

struct P2pHeader {
  uint32_t tag;
  uint32_t pad;
  uint64_t bytes;
};

}  // namespace

ShmCommunicator::ShmCommunicator(int rank, int size, const CommOptions& options)
    : rank_(rank), size_(size), options_(options), state_(std::make_shared<CommState>()) {}

StatusOr<std::unique_ptr<ShmCommunicator>> ShmCommunicator::Create(Bootstrap& bootstrap,
                                                                   const CommOptions& options) {
  GANTRY_RETURN_IF_ERROR(options.Validate());
  auto scope = bootstrap.NewScope("shm-hosts");
  GANTRY_ASSIGN_OR_RETURN(auto hosts,
                          bootstrap.AllGather(*scope, "host", Bootstrap::HostId(), options.timeout));
  for (int r = 0; r < bootstrap.size(); ++r) {
    if (hosts[r] != hosts[0]) {
      return FailedPreconditionError("shm communicator: rank " + std::to_string(r) + " runs on " +
                                     hosts[r] + " but rank 0 on " + hosts[0] +
                                     "; shm needs all ranks on one host (use backend tcp or auto)");
    }
  }
  // The segment layout and the copy-free window threshold are computed by each rank from its
  // own settings: ranks that disagree would read each other's stages at the wrong offsets.
  GANTRY_RETURN_IF_ERROR(bootstrap.AgreeOn(
      "shm communicator",
      {{"GANTRY_COMM_SHM_CHUNK_BYTES", std::to_string(options.shm_chunk_bytes)},
       {"GANTRY_COMM_SHM_STAGES", std::to_string(options.shm_stages)},
       {"GANTRY_COMM_SHM_MAILBOX_BYTES", std::to_string(options.shm_mailbox_bytes)},
       {"GANTRY_COMM_SHM_WINDOW_MIN_BYTES", std::to_string(options.shm_window_min_bytes)}},
      options.timeout));
  std::unique_ptr<ShmCommunicator> c(
      new ShmCommunicator(bootstrap.rank(), bootstrap.size(), options));
  // Keep the segment bounded for many ranks per host: slots grow with n^2 (n slices per stage,
  // n ranks) and mailboxes with n^2 pairs, so per-piece sizes shrink as n grows.
  const size_t n = static_cast<size_t>(bootstrap.size());
  const size_t chunk = std::min(options.shm_chunk_bytes, std::max<size_t>(4096, (256u << 10) / n) / 64 * 64);
  const size_t mailbox =
      std::min(options.shm_mailbox_bytes, std::max<size_t>(16u << 10, (32u << 20) / (n * n)) / 4096 * 4096);
  ShmSegment::Layout layout{bootstrap.size(), options.shm_stages, n * chunk, chunk, mailbox};
  auto seg = ShmSegment::Create(bootstrap, layout, options.timeout);
  if (!seg.ok()) {
    Status s = seg.status();
    return s.Prepend("shm communicator (rank " + std::to_string(bootstrap.rank()) + ")");
  }
  c->group_ = std::make_unique<ShmGroup>(std::move(seg).value(), bootstrap.rank());
  c->coll_lane_ = std::make_unique<Lane>("shm collectives", c->state_);
  c->send_lane_ = std::make_unique<Lane>("shm sends", c->state_);
  c->recv_lane_ = std::make_unique<Lane>("shm receives", c->state_);
  c->coll_lane_->set_inline_waits(options.timeout);
  for (Lane* l : {c->coll_lane_.get(), c->send_lane_.get(), c->recv_lane_.get()}) {
    l->set_on_failure([g = c->group_.get()](const Status& s) { g->Poison(s); });
  }
  return c;
}

ShmCommunicator::~ShmCommunicator() {
  // Ops still in flight end now, not at their deadline (see TcpCommunicator's destructor).
  if (Lane::AnyBusy({&coll_lane_, &send_lane_, &recv_lane_})) Abort(DestroyedInFlightError());
  coll_lane_.reset();
  send_lane_.reset();
  recv_lane_.reset();
}

void ShmCommunicator::Abort(const Status& reason) {
  Status s = AbortedError("shm communicator aborted: " + reason.ToString());
  if (state_->Fail(s)) {
    group_->Abort();
    group_->Poison(s, reason.code());  // peers report what went wrong, not that it aborted
  }
}

Status ShmCommunicator::AsyncError() const { return state_->failed() ? state_->error() : OkStatus(); }

Status ShmCommunicator::CheckRank(const char* what, int r, bool allow_self) const {
  if (r < 0 || r >= size_ || (!allow_self && r == rank_)) {
    return InvalidArgumentError(std::string(what) + ": rank " + std::to_string(r) +
                                " is not a valid " + (allow_self ? "root" : "peer") + " in 0.." +
                                std::to_string(size_ - 1) + " (this is rank " +
                                std::to_string(rank_) + ")");
  }
  return OkStatus();
}

WorkPtr ShmCommunicator::SubmitCollective(OpLabel label, uint8_t kind, uint8_t op, int root,
                                          std::function<Status(const ShmGroup::Op&)> run,
                                          std::optional<ShmWindows::Where> where) {
  label.seq = ++seq_;
  ShmOpMeta meta{label.seq, label.count, kind, static_cast<uint8_t>(label.dtype), op, 0, root};
  meta.step_of = step_of_;
  if (where) {
    meta.window = where->window;
    meta.offset = where->offset;
  }
  return coll_lane_->Submit([this, meta, name = label.ToString(), run = std::move(run)] {
    ShmGroup::Op o{name, meta, Clock::now(), {}};
    o.deadline = o.start + options_.timeout;
    return run(o);
  });
}

WorkPtr ShmCommunicator::Allreduce(const void* send, void* recv, size_t count, DataType dtype,
                                   ReduceOp op) {
  OpLabel label{"allreduce", 0, count, dtype, std::string(ReduceOpName(op))};
  // Small messages stay staged (CommOptions::shm_window_min_bytes): up to 256 KiB the window
  // path measured slower (its final wait for the peers is an extra round trip).
  const size_t bytes = count * DataTypeSize(dtype);
  const auto where = send == recv && size_ > 1 && bytes >= options_.shm_window_min_bytes
                         ? windows_.Find(recv, bytes)
                         : std::nullopt;
  if (where) {
    return SubmitCollective(std::move(label), kShmAllreduceWindow, static_cast<uint8_t>(op), -1,
                            [=, this](const ShmGroup::Op& o) {
      return ShmAllreduceWindow(*group_, o, windows_, where->window, where->offset, count, dtype,
                                op);
    }, where);
  }
  return SubmitCollective(std::move(label), kShmAllreduce, static_cast<uint8_t>(op), -1,
                          [=, this](const ShmGroup::Op& o) {
    if (size_ == 1) {
      if (send != recv) std::memmove(recv, send, count * DataTypeSize(dtype));
      return OkStatus();
    }
    return ShmAllreduce(*group_, o, send, recv, count, dtype, op,
                        options_.shm_streaming_min_bytes);
  });
}

WorkPtr ShmCommunicator::Broadcast(void* data, size_t count, DataType dtype, int root) {
  if (Status s = CheckRank("broadcast", root, true); !s.ok()) return MakeDoneWork(s);
  OpLabel label{"broadcast", 0, count, dtype, "root " + std::to_string(root)};
  return SubmitCollective(std::move(label), kShmBroadcast, 0, root,
                          [=, this](const ShmGroup::Op& o) {
    return ShmBroadcast(*group_, o, data, count * DataTypeSize(dtype), root);
  });
}

WorkPtr ShmCommunicator::Allgather(const void* send, void* recv, size_t count, DataType dtype) {
  OpLabel label{"allgather", 0, count, dtype, ""};
  return SubmitCollective(std::move(label), kShmAllgather, 0, -1, [=, this](const ShmGroup::Op& o) {
    return ShmAllgather(*group_, o, send, recv, count, dtype);
  });
}

WorkPtr ShmCommunicator::ReduceScatter(const void* send, void* recv, size_t count, DataType dtype,
                                       ReduceOp op) {
  OpLabel label{"reduce_scatter", 0, count, dtype, std::string(ReduceOpName(op))};
  return SubmitCollective(std::move(label), kShmReduceScatter, static_cast<uint8_t>(op), -1,
                          [=, this](const ShmGroup::Op& o) {
    return ShmReduceScatter(*group_, o, send, recv, count, dtype, op);
  });
}

WorkPtr ShmCommunicator::Barrier() {
  OpLabel label{"barrier", 0, 0, DataType::kI32, ""};
  return SubmitCollective(std::move(label), kShmBarrier, 0, -1,
                          [this](const ShmGroup::Op& o) { return ShmBarrier(*group_, o); });
}

StatusOr<std::shared_ptr<void>> ShmCommunicator::AllocateSymmetric(size_t bytes) {
  if (size_ == 1) return std::shared_ptr<void>();  // nobody to share with
  OpLabel label{"allocate_symmetric", 0, bytes, DataType::kI32, ""};
  std::shared_ptr<void> out;
  WorkPtr w = SubmitCollective(std::move(label), kShmWindowAllocate, 0, -1,
                               [&, bytes](const ShmGroup::Op& o) -> Status {
    GANTRY_ASSIGN_OR_RETURN(out, windows_.Allocate(*group_, o, bytes));
    return OkStatus();
  });
  GANTRY_RETURN_IF_ERROR(w->Wait());
  return out;
}

static_assert(sizeof(ShmRankControl::signal) / sizeof(ShmCounter) == SymmetricPeers::kSignals);

const void* ShmCommunicator::Peer(const void* p, size_t bytes, int r) const {
  if (r < 0 || r >= size_) return nullptr;
  const auto where = windows_.Find(p, bytes);
  return where ? windows_.base(where->window, r) + where->offset : nullptr;
}

void ShmCommunicator::Signal(int slot, uint64_t value) { group_->Signal(slot, value); }

uint64_t ShmCommunicator::PeekSignal(int r, int slot) const {
  return group_->PeekSignal(r, slot);
}

Status ShmCommunicator::WaitSignal(int r, int slot, uint64_t value,
                                   std::chrono::milliseconds timeout, const std::string& what) {
  if (state_->failed()) return state_->error();
  if (r < 0 || r >= size_ || slot < 0 || slot >= kSignals) {
    return InvalidArgumentError(what + ": no signal " + std::to_string(slot) + " of rank " +
                                std::to_string(r) + " (" + std::to_string(size_) + " ranks, " +
                                std::to_string(int(kSignals)) + " signals each)");
  }
  if (group_->PeekSignal(r, slot) >= value) return OkStatus();
  ShmGroup::Op o{what, {}, Clock::now(), {}};
  o.deadline = o.start + timeout;
  const std::string reach = "raise signal " + std::to_string(slot) + " to " + std::to_string(value);
  Status s = group_->WaitSignal(o, r, slot, value, reach.c_str());
  if (!s.ok() && state_->Fail(s)) group_->Poison(s);
  return s;
}

WorkPtr ShmCommunicator::SubmitP2p(Lane* lane, OpLabel label,
                                   std::function<Status(const ShmGroup::Op&)> run) {
  return lane->Submit([this, name = label.ToString(), run = std::move(run)] {
    ShmGroup::Op o{name, {}, Clock::now(), {}};
    o.deadline = o.start + options_.timeout;
    return run(o);
  });
}

WorkPtr ShmCommunicator::Send(const void* data, size_t count, DataType dtype, int peer,
                              uint32_t tag) {
  if (Status s = CheckRank("send", peer, false); !s.ok()) return MakeDoneWork(s);
  OpLabel label{"send", ++send_seq_, count, dtype,
                "to rank " + std::to_string(peer) + " tag " + std::to_string(tag)};
  return SubmitP2p(send_lane_.get(), std::move(label), [=, this](const ShmGroup::Op& o) {
    P2pHeader h{tag, 0, count * DataTypeSize(dtype)};
    GANTRY_RETURN_IF_ERROR(group_->MailboxWrite(o, peer, &h, sizeof(h)));
    return group_->MailboxWrite(o, peer, data, h.bytes);
  });
}

WorkPtr ShmCommunicator::Recv(void* data, size_t count, DataType dtype, int peer, uint32_t tag) {
  if (Status s = CheckRank("recv", peer, false); !s.ok()) return MakeDoneWork(s);
  OpLabel label{"recv", ++recv_seq_, count, dtype,
                "from rank " + std::to_string(peer) + " tag " + std::to_string(tag)};
  return SubmitP2p(recv_lane_.get(), std::move(label), [=, this](const ShmGroup::Op& o) {
    P2pHeader h{};
    GANTRY_RETURN_IF_ERROR(group_->MailboxRead(o, peer, &h, sizeof(h)));
    const size_t bytes = count * DataTypeSize(dtype);
    if (h.tag != tag || h.bytes != bytes) {
      return FailedPreconditionError(o.label + ": rank " + std::to_string(peer) + " sent tag " +
                                     std::to_string(h.tag) + " with " + std::to_string(h.bytes) +
                                     " bytes, expected tag " + std::to_string(tag) + " with " +
                                     std::to_string(bytes) +
                                     " bytes; sends and receives must match in order");
    }
    return group_->MailboxRead(o, peer, data, bytes);
  });
}

}  // namespace gantry::comm
