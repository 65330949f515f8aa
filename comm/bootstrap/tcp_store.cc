// TcpStoreServer (thread per client over a MemoryStore) and the TcpStore client.
#include "comm/bootstrap/tcp_store.h"

#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <system_error>

namespace gantry::comm {
namespace {

enum : uint8_t { kOpSet = 1, kOpGet = 2, kOpAdd = 3, kOpHello = 4, kOpBye = 5 };
enum : uint8_t {
  kReplyOk = 0,
  kReplyTimeout = 1,
  kReplyBad = 2,
  kReplyJobFailed = 3,  // body: why (a rank died, ranks disagree)
  kReplyRefused = 4,    // hello refused; body: why
};
constexpr uint32_t kMaxKeyBytes = 4096;
constexpr uint64_t kMaxValueBytes = 64ull << 20;
constexpr uint64_t kValueChunkBytes = 1ull << 20;  // a value is read (and grown) this much at a time
// Bytes of keys and values the server accepts over its life (sets of the same key count again).
constexpr uint64_t kMaxTableBytes = 1ull << 30;
// How long the server waits for the rest of a request once its first byte arrived.
constexpr std::chrono::seconds kRequestBodyTimeout(30);
// How often a waiting Get looks for a failed job (a rank that disconnected without bye).
constexpr std::chrono::milliseconds kJobFailurePoll(100);
// Longest wait for the answer to a hello. A Gantry store answers at once (nothing to wait
// for); silence means the port belongs to another program, and the comm timeout (300 s by
// default) is far too long to learn that. A shorter comm timeout bounds it further.
constexpr std::chrono::seconds kHelloReplyTimeout(30);

template <typename T>
void Put(std::string* out, T v) {
  out->append(reinterpret_cast<const char*>(&v), sizeof(T));
}

// op u8 | key_len u32 | key | val_len u64 | val | timeout_ms u32
std::string EncodeRequest(uint8_t op, const std::string& key, const std::string& value,
                          std::chrono::milliseconds timeout) {
  std::string req;
  Put<uint8_t>(&req, op);
  Put<uint32_t>(&req, static_cast<uint32_t>(key.size()));
  req += key;
  Put<uint64_t>(&req, value.size());
  req += value;
  Put<uint32_t>(&req, static_cast<uint32_t>(std::min<int64_t>(timeout.count(), UINT32_MAX)));
  return req;
}

std::string RankGoneMessage(int rank) {
  return "rank " + std::to_string(rank) +
         " disconnected from the TCP store without closing it: it exited or crashed";
}

// "ip:port" of the connection's other end.
std::string PeerOf(const Socket& s) {
  sockaddr_storage ss{};
  socklen_t len = sizeof(ss);
  char host[NI_MAXHOST], port[NI_MAXSERV];
  if (getpeername(s.fd(), reinterpret_cast<sockaddr*>(&ss), &len) != 0 ||
      getnameinfo(reinterpret_cast<sockaddr*>(&ss), len, host, sizeof(host), port, sizeof(port),
                  NI_NUMERICHOST | NI_NUMERICSERV) != 0) {
    return "an unknown address";
  }
  std::string ip = host;
  if (ip.rfind("::ffff:", 0) == 0 && ip.find('.') != std::string::npos) ip = ip.substr(7);  // IPv4
  return ip.find(':') != std::string::npos ? "[" + ip + "]:" + port : ip + ":" + port;
}

}  // namespace

std::string JobIdentityFromEnv() {
  auto env = [](const char* name) -> std::string {
    const char* v = std::getenv(name);
    return v ? v : "";
  };
  if (const std::string job = env("GANTRY_JOB_ID"); !job.empty()) {
    return "gantry job " + job + " attempt " + env("GANTRY_ATTEMPT");
  }
  if (const std::string run = env("TORCHELASTIC_RUN_ID"); !run.empty()) {
    return "torchrun run " + run;
  }
  // Open MPI (PMIx): one namespace per mpirun, so a stray hello from another mpirun job
  // cannot pass for a rank of this one.
  if (const std::string ns = env("PMIX_NAMESPACE"); !ns.empty()) return "mpirun job " + ns;
  return "";
}

StatusOr<std::unique_ptr<TcpStoreServer>> TcpStoreServer::Start(const std::string& host, int port,
                                                                Options options) {
  std::unique_ptr<TcpStoreServer> s(new TcpStoreServer());
  options.max_clients = std::max(1, options.max_clients);
  s->options_ = std::move(options);
  GANTRY_ASSIGN_OR_RETURN(s->listener_, Listen(host, port));
  s->port_ = BoundPort(s->listener_);
  s->accept_thread_ = std::thread([p = s.get()] { p->AcceptLoop(); });
  return s;
}

TcpStoreServer::~TcpStoreServer() {
  stop_ = true;
  listener_.Shutdown();
  if (accept_thread_.joinable()) accept_thread_.join();  // not started when Listen failed
  table_.Close();
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& c : conns_) c->sock.Shutdown();
  for (auto& c : conns_) {
    if (c->thread.joinable()) c->thread.join();
  }
}

void TcpStoreServer::ReapFinished() {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto it = conns_.begin(); it != conns_.end();) {
    if (!(*it)->done.load(std::memory_order_acquire)) {
      ++it;
      continue;
    }
    if ((*it)->thread.joinable()) (*it)->thread.join();
    it = conns_.erase(it);
  }
}

void TcpStoreServer::AcceptLoop() {
  while (!stop_) {
    auto sock = Accept(listener_, DeadlineAfter(std::chrono::milliseconds(500)));
    ReapFinished();
    if (!sock.ok()) {
      if (stop_) return;  // listener shut down
      // Out of descriptors (EMFILE) or a transient failure: keep serving, without spinning.
      if (sock.status().code() != StatusCode::kDeadlineExceeded) {
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
      }
      continue;
    }
    std::lock_guard<std::mutex> lock(mu_);
    if (static_cast<int>(conns_.size()) >= options_.max_clients) continue;  // closed as it goes
    auto conn = std::make_unique<Conn>();
    conn->sock = std::move(sock).value();
    conn->peer = PeerOf(conn->sock);
    Conn* c = conn.get();
    try {
      c->thread = std::thread([this, c] {
        Serve(c);
        c->done.store(true, std::memory_order_release);
      });
    } catch (const std::system_error&) {
      continue;  // no thread to be had (a limit): the connection is closed, the server lives
    }
    conns_.push_back(std::move(conn));
  }
}

void TcpStoreServer::Serve(Conn* conn) {
  Socket& sock = conn->sock;
  struct OnEnd {
    TcpStoreServer* server;
    Conn* conn;
    ~OnEnd() { server->ConnectionEnded(conn); }
  } on_end{this, conn};
  for (;;) {
    uint8_t op;
    // Idle clients may stay silent for hours: wait for a request in 1 s slices.
    Status s = RecvAll(sock, &op, 1, DeadlineAfter(std::chrono::milliseconds(1000)));
    if (s.code() == StatusCode::kDeadlineExceeded && !stop_) continue;
    if (!s.ok()) return;
    Deadline body = Clock::now() + kRequestBodyTimeout;
    uint32_t key_len = 0, timeout_ms = 0;
    uint64_t val_len = 0;
    std::string key, value, reply;
    if (!RecvAll(sock, &key_len, 4, body).ok() || key_len > kMaxKeyBytes) return;
    key.resize(key_len);
    if (!RecvAll(sock, key.data(), key_len, body).ok()) return;
    if (!RecvAll(sock, &val_len, 8, body).ok() || val_len > kMaxValueBytes) return;
    while (value.size() < val_len) {  // grows only as the bytes arrive
      const size_t have = value.size();
      const size_t chunk = static_cast<size_t>(std::min<uint64_t>(kValueChunkBytes, val_len - have));
      value.resize(have + chunk);
      if (!RecvAll(sock, value.data() + have, chunk, body).ok()) return;
    }
    if (!RecvAll(sock, &timeout_ms, 4, body).ok()) return;
    uint8_t code = kReplyOk;
    std::string out;
    if (op != kOpHello && op != kOpBye) conn->used = true;
    if (op == kOpSet) {
      // Bootstrap values are small: a client filling the table is refused, not rank 0's memory.
      if (table_bytes_.fetch_add(key.size() + value.size()) + key.size() + value.size() >
          kMaxTableBytes) {
        code = kReplyBad;
      } else {
        table_.Set(key, value).IgnoreError();
      }
    } else if (op == kOpGet) {
      const Deadline until = Clock::now() + std::chrono::milliseconds(timeout_ms);
      for (;;) {
        if (failed_.load(std::memory_order_acquire)) {
          code = kReplyJobFailed;
          out = JobFailure();
          break;
        }
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - Clock::now());
        auto v = table_.Get(key, std::clamp(left, std::chrono::milliseconds(0), kJobFailurePoll));
        if (v.ok()) {
          out = *v;
          break;
        }
        if (v.status().code() != StatusCode::kDeadlineExceeded || Clock::now() >= until) {
          code = kReplyTimeout;
          break;
        }
      }
      // The server is going away (rank 0 exits): no answer, the client sees the connection
      // close. A "not set within the timeout" reply here claimed a wait that never happened.
      if (code == kReplyTimeout && stop_) return;
    } else if (op == kOpAdd && val_len == 8) {
      int64_t delta;
      std::memcpy(&delta, value.data(), 8);
      auto v = table_.Add(key, delta);
      if (v.ok()) Put<int64_t>(&out, *v); else code = kReplyBad;
    } else if (op == kOpHello) {
      code = Hello(conn, key, value, &out);
    } else if (op == kOpBye) {
      conn->said_bye = true;
    } else {
      code = kReplyBad;
    }
    Put<uint8_t>(&reply, code);
    Put<uint64_t>(&reply, out.size());
    reply += out;
    if (!SendAll(sock, reply.data(), reply.size(), Clock::now() + kRequestBodyTimeout).ok()) return;
    if (op == kOpBye) return;
  }
}

uint8_t TcpStoreServer::Hello(Conn* conn, const std::string& key, const std::string& value,
                              std::string* why) {
  if (key != kTcpStoreProtocol || value.size() < 16) {
    *why = std::string("not a ") + kTcpStoreProtocol +
           " hello (a Gantry of another version, or another program?)";
    return kReplyRefused;
  }
  int64_t rank = 0, world = 0;
  std::memcpy(&rank, value.data(), 8);
  std::memcpy(&world, value.data() + 8, 8);
  const std::string job = value.substr(16);
  const std::string who = "rank " + std::to_string(rank) + " (from " + conn->peer + ")";
  if (conn->rank >= 0) {
    *why = "this connection already said hello as rank " + std::to_string(conn->rank);
    return kReplyRefused;
  }
  // A rank of another job or attempt is turned away without harming this one.
  if (!options_.job.empty() && !job.empty() && job != options_.job) {
    *why = "this TCP store serves " + options_.job + ", but " + who + " belongs to " + job +
           ": two jobs share MASTER_ADDR:MASTER_PORT";
    return kReplyRefused;
  }
  if (options_.world_size > 0 && world != options_.world_size) {
    *why = "ranks disagree on WORLD_SIZE: rank 0 (hosting the TCP store) has WORLD_SIZE=" +
           std::to_string(options_.world_size) + ", " + who + " has WORLD_SIZE=" +
           std::to_string(world) + "; start every rank with the same WORLD_SIZE";
    FailJob(*why);
    return kReplyRefused;
  }
  if (world <= 0 || rank < 0 || rank >= world) {  // a Gantry rank checks this itself: a stranger
    *why = "rank " + std::to_string(rank) + " is outside WORLD_SIZE=" + std::to_string(world);
    return kReplyRefused;
  }
  std::lock_guard<std::mutex> lock(claims_mu_);
  auto [it, inserted] = claims_.emplace(static_cast<int>(rank), conn);
  if (!inserted) {
    // The holder may be gone without its thread having noticed yet (it is answering a Get, or
    // the close is in flight): then this is its replacement, not a second process.
    Conn* holder = it->second;
    pollfd p{holder->sock.fd(), POLLRDHUP, 0};
    const bool gone = ::poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR));
    if (!gone) {
      *why = "two processes claim rank " + std::to_string(rank) + " (from " + holder->peer +
             " and " + conn->peer + "): check RANK (or JOB_COMPLETION_INDEX) on each process";
      FailJob(*why);
      return kReplyRefused;
    }
    // A holder that used the store died: the job failed (its own thread will say so too). One
    // that only said hello leaves its place to this one.
    if (holder->used && !holder->said_bye) {
      *why = RankGoneMessage(static_cast<int>(rank));
      FailJob(*why);
      return kReplyRefused;
    }
    it->second = conn;
  }
  conn->rank = static_cast<int>(rank);
  *why = kTcpStoreProtocol;  // the answer that proves this is a Gantry store
  return kReplyOk;
}

void TcpStoreServer::ConnectionEnded(Conn* conn) {
  if (conn->rank < 0) return;
  {
    std::lock_guard<std::mutex> lock(claims_mu_);
    // Its place may already belong to a replacement (Hello).
    if (auto it = claims_.find(conn->rank); it != claims_.end() && it->second == conn) {
      claims_.erase(it);
    }
  }
  // A rank that used the store and goes away without bye has died: say so to every waiter. One
  // that only said hello did nothing the others wait on (a stranger's probe fails nobody).
  if (conn->used && !conn->said_bye && !stop_) FailJob(RankGoneMessage(conn->rank));
}

void TcpStoreServer::FailJob(const std::string& why) {
  std::lock_guard<std::mutex> lock(failure_mu_);
  if (!failure_.empty()) return;  // the first reason is the cause; later ones follow from it
  failure_ = why;
  failed_.store(true, std::memory_order_release);
}

std::string TcpStoreServer::JobFailure() {
  std::lock_guard<std::mutex> lock(failure_mu_);
  return failure_;
}

StatusOr<std::unique_ptr<TcpStore>> TcpStore::Connect(const std::string& host, int port,
                                                      std::chrono::milliseconds timeout) {
  std::unique_ptr<TcpStore> s(new TcpStore());
  s->endpoint_ = host + ":" + std::to_string(port);
  auto sock = comm::Connect(host, port, DeadlineAfter(timeout));
  if (!sock.ok()) {
    Status st = sock.status();
    return st.Prepend("TCP store at " + s->endpoint_ +
                      " (MASTER_ADDR:MASTER_PORT) is not reachable; is rank 0 running?");
  }
  s->socket_ = std::move(sock).value();
  GANTRY_RETURN_IF_ERROR(s->socket_.Tune(0));
  return s;
}

StatusOr<TcpStore::Reply> TcpStore::Exchange(uint8_t op, const std::string& key,
                                              const std::string& value,
                                              std::chrono::milliseconds wire_timeout,
                                              Deadline deadline) {
  const std::string req = EncodeRequest(op, key, value, wire_timeout);
  std::lock_guard<std::mutex> lock(mu_);
  if (!broken_.ok()) return broken_;
  // A failure midway leaves the stream out of step (the next call would read this one's
  // reply): the connection is closed and every later call fails with the same error.
  auto fail = [&](Status s) {
    broken_ = s.Prepend("TCP store " + endpoint_ + ": " +
                        (op == kOpHello ? std::string("hello") : "request for key '" + key + "'") +
                        " failed");
    socket_.Shutdown();
    return broken_;
  };
  Status s = SendAll(socket_, req.data(), req.size(), deadline);
  if (!s.ok()) return fail(s);
  Reply reply;
  uint64_t len;
  if (!(s = RecvAll(socket_, &reply.code, 1, deadline)).ok()) return fail(s);
  if (!(s = RecvAll(socket_, &len, 8, deadline)).ok()) return fail(s);
  if (len > kMaxValueBytes) return fail(DataLossError("reply too large"));
  reply.body.assign(len, '\0');
  if (!(s = RecvAll(socket_, reply.body.data(), len, deadline)).ok()) return fail(s);
  return reply;
}

StatusOr<std::string> TcpStore::Call(uint8_t op, const std::string& key, const std::string& value,
                                     std::chrono::milliseconds timeout) {
  const Deadline deadline = DeadlineAfter(timeout + std::chrono::seconds(30));
  GANTRY_ASSIGN_OR_RETURN(Reply reply, Exchange(op, key, value, timeout, deadline));
  if (reply.code == kReplyJobFailed) {
    return UnavailableError("store " + endpoint_ + ": waiting for key '" + key +
                            "': " + reply.body);
  }
  if (reply.code == kReplyTimeout) {
    return DeadlineExceededError("store " + endpoint_ + ": key '" + key + "' was not set within " +
                                 std::to_string(timeout.count()) +
                                 " ms; did every rank start (check WORLD_SIZE and the other ranks)?");
  }
  if (reply.code != kReplyOk) {
    std::lock_guard<std::mutex> lock(mu_);
    broken_ = InvalidArgumentError("TCP store " + endpoint_ +
                                   ": server rejected the request for key '" + key + "'");
    socket_.Shutdown();
    return broken_;
  }
  return std::move(reply.body);
}

Status TcpStore::Identify(const TcpStoreIdentity& who, std::chrono::milliseconds timeout) {
  std::string v(16, '\0');
  const int64_t rank = who.rank, world = who.world_size;
  std::memcpy(v.data(), &rank, 8);
  std::memcpy(v.data() + 8, &world, 8);
  v += who.job;
  const auto wait = std::min<std::chrono::milliseconds>(timeout, kHelloReplyTimeout);
  auto reply = Exchange(kOpHello, kTcpStoreProtocol, v, std::chrono::milliseconds(0),
                        DeadlineAfter(wait));
  const std::string foreign =
      "TCP store at " + endpoint_ + " (MASTER_ADDR:MASTER_PORT): whatever listens there does not "
      "speak Gantry's store protocol (" + std::string(kTcpStoreProtocol) + "): ";
  const std::string advice =
      "; another program may hold the port (torchrun's agent store does: Gantry moves to "
      "MASTER_PORT+1 when TORCHELASTIC_USE_AGENT_STORE is set, or set GANTRY_STORE_PORT), or "
      "rank 0 runs another Gantry version";
  if (!reply.ok()) {
    const Status& s = reply.status();
    if (s.code() == StatusCode::kDeadlineExceeded) {
      return FailedPreconditionError(foreign + "it accepted the connection but did not answer "
                                     "Gantry's hello within " + std::to_string(wait.count()) +
                                     " ms" + advice);
    }
    if (s.code() == StatusCode::kUnavailable) {  // closed: a stranger, or rank 0 exiting now
      Status closed = s;
      return closed.Prepend("TCP store at " + endpoint_ + " closed the connection at Gantry's "
                            "hello: rank 0 exited just then, or whatever listens on "
                            "MASTER_ADDR:MASTER_PORT is not Gantry's TCP store");
    }
    return FailedPreconditionError(foreign + s.message() + advice);
  }
  if (reply->code == kReplyRefused) {
    return FailedPreconditionError("TCP store at " + endpoint_ + " refused rank " +
                                   std::to_string(who.rank) + ": " + reply->body);
  }
  if (reply->code != kReplyOk || reply->body != kTcpStoreProtocol) {
    std::lock_guard<std::mutex> lock(mu_);
    broken_ = FailedPreconditionError(foreign + "it answered Gantry's hello with something else" +
                                      advice);
    socket_.Shutdown();
    return broken_;
  }
  return OkStatus();
}

Status TcpStore::Set(const std::string& key, const std::string& value) {
  return Call(kOpSet, key, value, std::chrono::milliseconds(0)).status();
}

StatusOr<std::string> TcpStore::Get(const std::string& key, std::chrono::milliseconds timeout) {
  return Call(kOpGet, key, "", timeout);
}

TcpStore::~TcpStore() {
  // A clean close: the server must not take this rank for dead. Best effort and bounded: a
  // server already gone (rank 0 finished first) makes it fail at once.
  std::lock_guard<std::mutex> lock(mu_);
  if (!broken_.ok() || !socket_.valid()) return;
  const std::string req = EncodeRequest(kOpBye, "", "", std::chrono::milliseconds(0));
  const Deadline deadline = DeadlineAfter(std::chrono::milliseconds(500));
  if (!SendAll(socket_, req.data(), req.size(), deadline).ok()) return;
  char reply[9];
  (void)RecvAll(socket_, reply, sizeof(reply), deadline);  // the server read it all
}

StatusOr<int64_t> TcpStore::Add(const std::string& key, int64_t delta) {
  std::string v(8, '\0');
  std::memcpy(v.data(), &delta, 8);
  GANTRY_ASSIGN_OR_RETURN(std::string out, Call(kOpAdd, key, v, std::chrono::milliseconds(0)));
  if (out.size() != 8) return DataLossError("TCP store " + endpoint_ + ": bad Add reply");
  int64_t r;
  std::memcpy(&r, out.data(), 8);
  return r;
}

}  // namespace gantry::comm
