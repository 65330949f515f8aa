// TcpStoreServer (thread per client over a MemoryStore) and the TcpStore client.
#include "comm/bootstrap/tcp_store.h"

#include <algorithm>
#include <cstring>
#include <system_error>

namespace gantry::comm {
namespace {

enum : uint8_t { kOpSet = 1, kOpGet = 2, kOpAdd = 3, kOpHello = 4, kOpBye = 5 };
enum : uint8_t { kReplyOk = 0, kReplyTimeout = 1, kReplyBad = 2, kReplyRankGone = 3 };
constexpr uint32_t kMaxKeyBytes = 4096;
constexpr uint64_t kMaxValueBytes = 64ull << 20;
constexpr uint64_t kValueChunkBytes = 1ull << 20;  // a value is read (and grown) this much at a time
// Bytes of keys and values the server accepts over its life (sets of the same key count again).
constexpr uint64_t kMaxTableBytes = 1ull << 30;
// How long the server waits for the rest of a request once its first byte arrived.
constexpr std::chrono::seconds kRequestBodyTimeout(30);
// How often a waiting Get looks for a rank that disconnected without bye.
constexpr std::chrono::milliseconds kDeadRankPoll(100);

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

}  // namespace

StatusOr<std::unique_ptr<TcpStoreServer>> TcpStoreServer::Start(const std::string& host, int port,
                                                                int max_clients) {
  std::unique_ptr<TcpStoreServer> s(new TcpStoreServer());
  s->max_clients_ = std::max(1, max_clients);
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
    if (static_cast<int>(conns_.size()) >= max_clients_) continue;  // closed as it goes
    auto conn = std::make_unique<Conn>();
    conn->sock = std::move(sock).value();
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
  // A rank that said hello and goes away without bye has died: say so to every waiter.
  struct MarkDead {
    TcpStoreServer* server;
    Conn* conn;
    ~MarkDead() {
      if (conn->rank < 0 || conn->said_bye || server->stop_) return;
      int none = -1;
      server->dead_rank_.compare_exchange_strong(none, conn->rank, std::memory_order_acq_rel);
    }
  } mark_dead{this, conn};
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
        if (const int dead = DeadRank(); dead >= 0) {
          code = kReplyRankGone;
          out = RankGoneMessage(dead);
          break;
        }
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - Clock::now());
        auto v = table_.Get(key, std::clamp(left, std::chrono::milliseconds(0), kDeadRankPoll));
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
    } else if (op == kOpHello && val_len == 8) {
      int64_t rank;
      std::memcpy(&rank, value.data(), 8);
      if (rank >= 0 && rank <= INT32_MAX) conn->rank = static_cast<int>(rank); else code = kReplyBad;
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

StatusOr<std::string> TcpStore::Call(uint8_t op, const std::string& key, const std::string& value,
                                     std::chrono::milliseconds timeout) {
  const std::string req = EncodeRequest(op, key, value, timeout);
  std::lock_guard<std::mutex> lock(mu_);
  if (!broken_.ok()) return broken_;
  Deadline deadline = DeadlineAfter(timeout + std::chrono::seconds(30));
  // A failure midway leaves the stream out of step (the next call would read this one's
  // reply): the connection is closed and every later call fails with the same error.
  auto fail = [&](Status s) {
    broken_ = s.Prepend("TCP store " + endpoint_ + ": request for key '" + key + "' failed");
    socket_.Shutdown();
    return broken_;
  };
  Status s = SendAll(socket_, req.data(), req.size(), deadline);
  if (!s.ok()) return fail(s);
  uint8_t code;
  uint64_t len;
  if (!(s = RecvAll(socket_, &code, 1, deadline)).ok()) return fail(s);
  if (!(s = RecvAll(socket_, &len, 8, deadline)).ok()) return fail(s);
  if (len > kMaxValueBytes) return fail(DataLossError("reply too large"));
  std::string out(len, '\0');
  if (!(s = RecvAll(socket_, out.data(), len, deadline)).ok()) return fail(s);
  if (code == kReplyRankGone) {
    return UnavailableError("store " + endpoint_ + ": waiting for key '" + key + "': " + out);
  }
  if (code == kReplyTimeout) {
    return DeadlineExceededError("store " + endpoint_ + ": key '" + key + "' was not set within " +
                                 std::to_string(timeout.count()) +
                                 " ms; did every rank start (check WORLD_SIZE and the other ranks)?");
  }
  if (code != kReplyOk) return fail(InvalidArgumentError("server rejected the request"));
  return out;
}

Status TcpStore::Set(const std::string& key, const std::string& value) {
  return Call(kOpSet, key, value, std::chrono::milliseconds(0)).status();
}

StatusOr<std::string> TcpStore::Get(const std::string& key, std::chrono::milliseconds timeout) {
  return Call(kOpGet, key, "", timeout);
}

Status TcpStore::Identify(int rank) {
  std::string v(8, '\0');
  const int64_t r = rank;
  std::memcpy(v.data(), &r, 8);
  return Call(kOpHello, "", v, std::chrono::milliseconds(0)).status();
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
