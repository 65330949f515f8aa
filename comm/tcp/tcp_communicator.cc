// TcpCommunicator: connection setup through the store, collectives via RingEngine plans,
// point-to-point over per-pair sockets with a small tagged header.
#include "comm/tcp/tcp_communicator.h"

#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <cstring>
#include <random>
#include <sstream>

#include "comm/reduce.h"

namespace gantry::comm {
namespace {

constexpr uint32_t kHelloMagic = 0x47544850;  // "GTHP"
constexpr uint32_t kOpMagic = 0x4754434f;     // "GTCO"
constexpr uint32_t kP2pMagic = 0x47545032;    // "GTP2"

struct Hello {
  uint32_t magic;
  int32_t rank;
  int32_t kind;   // 0 ring, 1 p2p
  int32_t index;  // ring socket index
  uint64_t nonce;
};

struct P2pHeader {
  uint32_t magic;
  uint32_t tag;
  uint64_t bytes;
  uint64_t seq;
};

}  // namespace

TcpCommunicator::TcpCommunicator(int rank, int size, const CommOptions& options)
    : rank_(rank), size_(size), options_(options), state_(std::make_shared<CommState>()) {}

StatusOr<std::unique_ptr<TcpCommunicator>> TcpCommunicator::Create(Bootstrap& bootstrap,
                                                                   const CommOptions& options) {
  GANTRY_RETURN_IF_ERROR(options.Validate());
  std::unique_ptr<TcpCommunicator> c(new TcpCommunicator(bootstrap.rank(), bootstrap.size(), options));
  Status s = c->Connect(bootstrap);
  if (!s.ok()) return s.Prepend("tcp communicator (rank " + std::to_string(bootstrap.rank()) + "/" +
                                std::to_string(bootstrap.size()) + ")");
  c->coll_lane_ = std::make_unique<Lane>("tcp collectives", c->state_);
  c->send_lane_ = std::make_unique<Lane>("tcp sends", c->state_);
  c->recv_lane_ = std::make_unique<Lane>("tcp receives", c->state_);
  for (Lane* l : {c->coll_lane_.get(), c->send_lane_.get(), c->recv_lane_.get()}) {
    l->set_on_failure([p = c.get()](const Status&) { p->CloseAll(); });
    // A Wait at least as long as the op's own timeout may run the op itself: no handoffs.
    l->set_inline_waits(options.timeout);
  }
  return c;
}

TcpCommunicator::~TcpCommunicator() {
  // Ops still in flight end now, not at their deadline (a stalled peer held this up to the
  // whole timeout); their Works fail as aborted and the peers see the connections close.
  if (Lane::AnyBusy({&coll_lane_, &send_lane_, &recv_lane_})) Abort(DestroyedInFlightError());
  coll_lane_.reset();
  send_lane_.reset();
  recv_lane_.reset();
}

Status TcpCommunicator::Connect(Bootstrap& bootstrap) {
  auto scope = bootstrap.NewScope("tcp");
  if (size_ == 1) return OkStatus();
  const std::string host = options_.tcp_host.empty() ? bootstrap.advertise_host() : options_.tcp_host;
  GANTRY_ASSIGN_OR_RETURN(Socket listener, Listen(host, 0, 128 + size_));
  uint64_t nonce = std::random_device{}() * 0x100000001ull + std::random_device{}();
  // The settings that decide how a collective is cut into messages travel with the address:
  // ranks that disagree would exchange the same byte counts with different meanings (a pair
  // exchange against a ring, other chunk boundaries) and compute wrong sums without an error.
  const std::string settings = EncodeSettings(
      {{"GANTRY_COMM_TCP_SOCKETS", std::to_string(options_.tcp_sockets)},
       {"GANTRY_COMM_TCP_CHUNK_BYTES", std::to_string(options_.tcp_chunk_bytes)},
       {"GANTRY_COMM_TCP_EXCHANGE_MAX_BYTES", std::to_string(options_.tcp_exchange_max_bytes)}});
  const std::string blob = host + " " + std::to_string(BoundPort(listener)) + " " +
                           std::to_string(nonce) + "\n" + settings;
  GANTRY_ASSIGN_OR_RETURN(auto blobs, bootstrap.AllGather(*scope, "addr", blob, options_.timeout));
  std::vector<std::string> hosts(size_), their_settings(size_);
  std::vector<int> ports(size_);
  for (int r = 0; r < size_; ++r) {
    const size_t newline = blobs[r].find('\n');
    std::istringstream in(blobs[r].substr(0, newline));
    uint64_t n = 0;
    if (!(in >> hosts[r] >> ports[r] >> n) || ports[r] <= 0 || ports[r] > 65535) {
      return DataLossError("tcp communicator: rank " + std::to_string(r) +
                           " published a malformed address '" + blobs[r].substr(0, 80) +
                           "' (expected 'HOST PORT NONCE')");
    }
    if (r == 0) nonce = n;
    their_settings[r] = newline == std::string::npos ? "" : blobs[r].substr(newline + 1);
  }
  GANTRY_RETURN_IF_ERROR(CompareSettings("tcp communicator", their_settings));
  const Deadline deadline = DeadlineAfter(options_.timeout);
  const int next = (rank_ + 1) % size_, prev = (rank_ + size_ - 1) % size_;
  const int k_socks = options_.tcp_sockets;
  to_next_.resize(k_socks);
  from_prev_.resize(k_socks);
  p2p_.resize(size_);
  auto dial = [&](int peer, int kind, int index) -> StatusOr<Socket> {
    auto s = comm::Connect(hosts[peer], ports[peer], deadline, /*retry_refused=*/false);
    if (!s.ok()) {
      Status st = s.status();
      return st.Prepend("connecting to rank " + std::to_string(peer));
    }
    GANTRY_RETURN_IF_ERROR(s->Tune(options_.tcp_socket_buffer_bytes));
    Hello h{kHelloMagic, rank_, kind, index, nonce};
    GANTRY_RETURN_IF_ERROR(SendAll(*s, &h, sizeof(h), deadline));
    return s;
  };
  for (int k = 0; k < k_socks; ++k) {
    GANTRY_ASSIGN_OR_RETURN(to_next_[k], dial(next, 0, k));
  }
  for (int j = 0; j < rank_; ++j) {
    GANTRY_ASSIGN_OR_RETURN(p2p_[j], dial(j, 1, 0));
  }
  // Accepted connections whose hello has not fully arrived. They are read side by side, so
  // a stray connection (a port scan, a health probe, a stale dialer) that never says hello
  // costs nothing: read one at a time, each such stray held the setup up to 5 s.
  struct PendingHello {
    Socket sock;
    Hello hello{};
    size_t got = 0;
    Deadline until;
  };
  std::vector<PendingHello> pending;
  std::vector<pollfd> fds;
  int expected = k_socks + (size_ - 1 - rank_);
  auto waiting_error = [&](Status st) {
    return st.Prepend("waiting for " + std::to_string(expected) + " more peer connections");
  };
  Clock::time_point last_probe = Clock::now();
  while (expected > 0) {
    const Clock::time_point now = Clock::now();
    if (now >= deadline) {
      return waiting_error(DeadlineExceededError("no peer connected in time (" +
                                                 SecondsSince(deadline - options_.timeout) + ")"));
    }
    // A peer that died after publishing its address never dials; the store knows it is gone
    // (rank 0's TCP store fails waits once a rank dropped without closing; a dead rank 0
    // takes the store with it): ask it every second rather than wait out the whole timeout.
    if (now - last_probe >= std::chrono::seconds(1)) {
      last_probe = now;
      auto probe = scope->Get("tcp-liveness-probe", std::chrono::milliseconds(0));
      if (probe.status().code() == StatusCode::kUnavailable) return waiting_error(probe.status());
    }
    Deadline wake = std::min(deadline, last_probe + std::chrono::seconds(1));
    fds.assign(1, pollfd{listener.fd(), POLLIN, 0});
    for (const PendingHello& p : pending) {
      fds.push_back({p.sock.fd(), POLLIN, 0});
      wake = std::min(wake, p.until);
    }
    int rc = ::poll(fds.data(), fds.size(), std::max(1, MillisLeft(wake)));
    if (rc < 0 && errno != EINTR) return waiting_error(ErrnoError("poll(accept)", errno));
    if (rc <= 0) {
      // Strays that said nothing in time are dropped.
      std::erase_if(pending, [](const PendingHello& p) { return Clock::now() >= p.until; });
      continue;
    }
    if (fds[0].revents & (POLLERR | POLLHUP | POLLNVAL)) {
      return waiting_error(UnavailableError("the listening socket was shut down"));
    }
    // Hellos first (fds[i + 1] is pending[i]); a finished or failed one leaves the list.
    std::vector<PendingHello> still;
    for (size_t i = 0; i < pending.size(); ++i) {
      PendingHello& p = pending[i];
      if (fds[i + 1].revents != 0) {
        ssize_t n = ::recv(p.sock.fd(), reinterpret_cast<char*>(&p.hello) + p.got,
                           sizeof(p.hello) - p.got, MSG_DONTWAIT);
        if (n > 0) p.got += size_t(n);
        const bool dead = n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR);
        if (dead) continue;  // a stray that hung up
      }
      if (p.got < sizeof(p.hello)) {
        if (Clock::now() < p.until) still.push_back(std::move(p));
        continue;
      }
      const Hello& h = p.hello;
      if (h.magic != kHelloMagic || h.nonce != nonce) continue;  // stray or stale connection
      GANTRY_RETURN_IF_ERROR(p.sock.Tune(options_.tcp_socket_buffer_bytes));
      if (h.kind == 0 && h.rank == prev && h.index >= 0 && h.index < k_socks &&
          !from_prev_[h.index].valid()) {
        from_prev_[h.index] = std::move(p.sock);
      } else if (h.kind == 1 && h.rank > rank_ && h.rank < size_ && !p2p_[h.rank].valid()) {
        p2p_[h.rank] = std::move(p.sock);
      } else {
        return InternalError("unexpected connection from rank " + std::to_string(h.rank));
      }
      --expected;
    }
    pending = std::move(still);
    if (fds[0].revents & POLLIN) {
      int fd = ::accept4(listener.fd(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
      if (fd >= 0) {
        pending.push_back({Socket(fd), Hello{}, 0,
                           std::min(deadline, DeadlineAfter(std::chrono::seconds(5)))});
      } else if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED) {
        return waiting_error(ErrnoError("accept", errno));
      }
    }
  }
  for (auto* v : {&to_next_, &from_prev_, &p2p_}) {
    for (auto& s : *v) {
      if (s.valid()) GANTRY_RETURN_IF_ERROR(s.SetNonBlocking(true));
    }
  }
  return OkStatus();
}

void TcpCommunicator::CloseAll() {
  for (auto* v : {&to_next_, &from_prev_, &p2p_}) {
    for (auto& s : *v) s.Shutdown();
  }
}

void TcpCommunicator::Abort(const Status& reason) {
  if (state_->Fail(AbortedError("tcp communicator aborted: " + reason.ToString()))) CloseAll();
}

Status TcpCommunicator::AsyncError() const { return state_->failed() ? state_->error() : OkStatus(); }

Status TcpCommunicator::CheckArgs(const char* op, size_t count, int root_or_peer) const {
  if (count > (1ull << 40)) {
    return InvalidArgumentError(std::string(op) + ": count " + std::to_string(count) + " is too large");
  }
  if (root_or_peer < -1 || root_or_peer >= size_) {
    return InvalidArgumentError(std::string(op) + ": rank " + std::to_string(root_or_peer) +
                                " is outside 0.." + std::to_string(size_ - 1));
  }
  return OkStatus();
}

Status TcpCommunicator::CheckHeader(const OpLabel& label, const OpHeader& mine) const {
  const OpHeader& t = their_header_;
  if (t.magic == mine.magic && t.kind == mine.kind && t.dtype == mine.dtype && t.op == mine.op &&
      t.seq == mine.seq && t.count == mine.count && t.root == mine.root) {
    return OkStatus();
  }
  const int prev = (rank_ + size_ - 1) % size_;
  return FailedPreconditionError(
      label.ToString() + ": rank " + std::to_string(prev) + " issued a different collective (kind " +
      std::to_string(t.kind) + ", seq " + std::to_string(t.seq) + ", count " +
      std::to_string(t.count) + ", dtype " + std::to_string(t.dtype) + ", op " +
      std::to_string(t.op) + ", root " + std::to_string(t.root) +
      "); every rank must call the same collectives in the same order with the same arguments");
}

Status TcpCommunicator::RunCollective(const OpLabel& label, const OpHeader& mine,
                                      const std::function<Status(RingPlan*)>& build) {
  const auto start = Clock::now();
  plan_.Reset(static_cast<DataType>(mine.dtype), static_cast<ReduceOp>(mine.op), size_);
  plan_.sends.push_back({reinterpret_cast<const char*>(&mine), sizeof(OpHeader), -1});
  plan_.recvs.push_back({reinterpret_cast<char*>(&their_header_), sizeof(OpHeader), nullptr, false});
  GANTRY_RETURN_IF_ERROR(build(&plan_));
  const RingPeers peers{(rank_ + size_ - 1) % size_, (rank_ + 1) % size_};
  return engine_.Run(plan_, to_next_, from_prev_, peers, label, start, start + options_.timeout,
                     [&] { return CheckHeader(label, mine); });
}

WorkPtr TcpCommunicator::SubmitCollective(OpLabel label, Kind kind, int root,
                                          std::function<Status(RingPlan*)> build) {
  label.seq = ++seq_;
  OpHeader h{kOpMagic, static_cast<uint8_t>(kind), static_cast<uint8_t>(label.dtype), 0, 0,
             label.seq, label.count, root, 0};
  if (kind == Kind::kAllreduce || kind == Kind::kReduceScatter) {
    auto op = ParseReduceOp(label.detail);
    h.op = static_cast<uint8_t>(op.ok() ? *op : ReduceOp::kSum);
  }
  return coll_lane_->Submit([this, label = std::move(label), h, build = std::move(build)] {
    if (size_ == 1) return build(nullptr);
    return RunCollective(label, h, build);
  });
}

WorkPtr TcpCommunicator::Allreduce(const void* send, void* recv, size_t count, DataType dtype,
                                   ReduceOp op) {
  if (Status s = CheckArgs("allreduce", count, -1); !s.ok()) return MakeDoneWork(s);
  OpLabel label{"allreduce", 0, count, dtype, std::string(ReduceOpName(op))};
  return SubmitCollective(std::move(label), Kind::kAllreduce, -1, [=, this](RingPlan* plan) {
    if (plan == nullptr) {
      if (send != recv) std::memmove(recv, send, count * DataTypeSize(dtype));
      return OkStatus();
    }
    if (size_ == 2 && count * DataTypeSize(dtype) <= options_.tcp_exchange_max_bytes) {
      PlanExchangeAllreduce({rank_, size_, options_.tcp_chunk_bytes}, send, recv, count, plan);
    } else {
      PlanAllreduce({rank_, size_, options_.tcp_chunk_bytes}, send, recv, count, plan);
    }
    return OkStatus();
  });
}

WorkPtr TcpCommunicator::Broadcast(void* data, size_t count, DataType dtype, int root) {
  if (Status s = CheckArgs("broadcast", count, root); !s.ok()) return MakeDoneWork(s);
  if (root < 0) return MakeDoneWork(InvalidArgumentError("broadcast: root must be >= 0"));
  OpLabel label{"broadcast", 0, count, dtype, "root " + std::to_string(root)};
  return SubmitCollective(std::move(label), Kind::kBroadcast, root, [=, this](RingPlan* plan) {
    if (plan != nullptr) {
      PlanBroadcast({rank_, size_, options_.tcp_chunk_bytes}, data, count * DataTypeSize(dtype),
                    root, plan);
    }
    return OkStatus();
  });
}

WorkPtr TcpCommunicator::Allgather(const void* send, void* recv, size_t count, DataType dtype) {
  if (Status s = CheckArgs("allgather", count, -1); !s.ok()) return MakeDoneWork(s);
  OpLabel label{"allgather", 0, count, dtype, ""};
  return SubmitCollective(std::move(label), Kind::kAllgather, -1, [=, this](RingPlan* plan) {
    const size_t bytes = count * DataTypeSize(dtype);
    char* mine = static_cast<char*>(recv) + rank_ * bytes;
    if (mine != send) std::memmove(mine, send, bytes);
    if (plan != nullptr) PlanAllgather({rank_, size_, options_.tcp_chunk_bytes}, recv, count, plan);
    return OkStatus();
  });
}

WorkPtr TcpCommunicator::ReduceScatter(const void* send, void* recv, size_t count, DataType dtype,
                                       ReduceOp op) {
  if (Status s = CheckArgs("reduce_scatter", count, -1); !s.ok()) return MakeDoneWork(s);
  OpLabel label{"reduce_scatter", 0, count, dtype, std::string(ReduceOpName(op))};
  return SubmitCollective(std::move(label), Kind::kReduceScatter, -1, [=, this](RingPlan* plan) {
    const size_t bytes = count * DataTypeSize(dtype);
    if (plan == nullptr) {
      if (send != recv) std::memmove(recv, send, bytes);
      return OkStatus();
    }
    if (scratch_.size() < bytes * size_) scratch_.resize(bytes * size_);
    PlanReduceScatter({rank_, size_, options_.tcp_chunk_bytes}, send, recv, scratch_.data(), count,
                      plan);
    return OkStatus();
  });
}

WorkPtr TcpCommunicator::Barrier() {
  OpLabel label{"barrier", 0, 1, DataType::kI32, ""};
  auto token = std::make_shared<int32_t[]>(2);
  return SubmitCollective(std::move(label), Kind::kBarrier, -1, [=, this](RingPlan* plan) {
    if (plan == nullptr) return OkStatus();
    if (size_ == 2) {
      PlanExchangeAllreduce({rank_, size_, 4096}, &token[0], &token[1], 1, plan);
    } else {
      PlanAllreduce({rank_, size_, 4096}, &token[0], &token[1], 1, plan);
    }
    return OkStatus();
  });
}

WorkPtr TcpCommunicator::Send(const void* data, size_t count, DataType dtype, int peer, uint32_t tag) {
  if (Status s = CheckArgs("send", count, peer); !s.ok()) return MakeDoneWork(s);
  if (peer == rank_ || peer < 0) {
    return MakeDoneWork(InvalidArgumentError("send: peer " + std::to_string(peer) +
                                             " must be another rank (this is rank " +
                                             std::to_string(rank_) + ")"));
  }
  OpLabel label{"send", ++send_seq_, count, dtype, "to rank " + std::to_string(peer) + " tag " +
                                                       std::to_string(tag)};
  return send_lane_->Submit([=, this, label = std::move(label)] {
    const auto start = Clock::now();
    const Deadline deadline = start + options_.timeout;
    const size_t bytes = count * DataTypeSize(dtype);
    P2pHeader h{kP2pMagic, tag, bytes, label.seq};
    Status s = SendAll(p2p_[peer], &h, sizeof(h), deadline);
    if (s.ok()) s = SendAll(p2p_[peer], data, bytes, deadline);
    if (s.ok()) return s;
    return Status(s.code(), label.ToString() + ": peer rank " + std::to_string(peer) + ": " +
                                s.message() + " after " + SecondsSince(start));
  });
}

WorkPtr TcpCommunicator::Recv(void* data, size_t count, DataType dtype, int peer, uint32_t tag) {
  if (Status s = CheckArgs("recv", count, peer); !s.ok()) return MakeDoneWork(s);
  if (peer == rank_ || peer < 0) {
    return MakeDoneWork(InvalidArgumentError("recv: peer " + std::to_string(peer) +
                                             " must be another rank"));
  }
  OpLabel label{"recv", ++recv_seq_, count, dtype, "from rank " + std::to_string(peer) + " tag " +
                                                       std::to_string(tag)};
  return recv_lane_->Submit([=, this, label = std::move(label)] {
    const auto start = Clock::now();
    const Deadline deadline = start + options_.timeout;
    const size_t bytes = count * DataTypeSize(dtype);
    P2pHeader h{};
    Status s = RecvAll(p2p_[peer], &h, sizeof(h), deadline);
    if (s.ok() && (h.magic != kP2pMagic || h.tag != tag || h.bytes != bytes)) {
      return FailedPreconditionError(label.ToString() + ": rank " + std::to_string(peer) +
                                     " sent tag " + std::to_string(h.tag) + " with " +
                                     std::to_string(h.bytes) + " bytes, expected tag " +
                                     std::to_string(tag) + " with " + std::to_string(bytes) +
                                     " bytes; sends and receives must match in order");
    }
    if (s.ok()) s = RecvAll(p2p_[peer], data, bytes, deadline);
    if (s.ok()) return s;
    return Status(s.code(), label.ToString() + ": peer rank " + std::to_string(peer) + ": " +
                                s.message() + " after " + SecondsSince(start));
  });
}

}  // namespace gantry::comm
