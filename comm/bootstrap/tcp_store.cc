// TcpStoreServer (thread per client over a MemoryStore) and the TcpStore client.
#include "comm/bootstrap/tcp_store.h"

#include <cstring>

namespace gantry::comm {
namespace {

enum : uint8_t { kOpSet = 1, kOpGet = 2, kOpAdd = 3 };
enum : uint8_t { kReplyOk = 0, kReplyTimeout = 1, kReplyBad = 2 };
constexpr uint32_t kMaxKeyBytes = 4096;
constexpr uint64_t kMaxValueBytes = 64ull << 20;
// How long the server waits for the rest of a request once its first byte arrived.
constexpr std::chrono::seconds kRequestBodyTimeout(30);

template <typename T>
void Put(std::string* out, T v) {
  out->append(reinterpret_cast<const char*>(&v), sizeof(T));
}

}  // namespace

StatusOr<std::unique_ptr<TcpStoreServer>> TcpStoreServer::Start(const std::string& host, int port) {
  std::unique_ptr<TcpStoreServer> s(new TcpStoreServer());
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
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& c : clients_) c->Shutdown();
  }
  for (auto& t : threads_) t.join();
}

void TcpStoreServer::AcceptLoop() {
  while (!stop_) {
    auto sock = Accept(listener_, DeadlineAfter(std::chrono::milliseconds(500)));
    if (!sock.ok()) {
      if (sock.status().code() == StatusCode::kDeadlineExceeded) continue;
      return;  // listener shut down
    }
    std::lock_guard<std::mutex> lock(mu_);
    clients_.push_back(std::make_unique<Socket>(std::move(sock).value()));
    int index = static_cast<int>(clients_.size()) - 1;
    threads_.emplace_back([this, index] { Serve(index); });
  }
}

void TcpStoreServer::Serve(int index) {
  Socket* sock;
  {
    std::lock_guard<std::mutex> lock(mu_);
    sock = clients_[index].get();
  }
  for (;;) {
    uint8_t op;
    // Idle clients may stay silent for hours: wait for a request in 1 s slices.
    Status s = RecvAll(*sock, &op, 1, DeadlineAfter(std::chrono::milliseconds(1000)));
    if (s.code() == StatusCode::kDeadlineExceeded && !stop_) continue;
    if (!s.ok()) return;
    Deadline body = Clock::now() + kRequestBodyTimeout;
    uint32_t key_len = 0, timeout_ms = 0;
    uint64_t val_len = 0;
    std::string key, value, reply;
    if (!RecvAll(*sock, &key_len, 4, body).ok() || key_len > kMaxKeyBytes) return;
    key.resize(key_len);
    if (!RecvAll(*sock, key.data(), key_len, body).ok()) return;
    if (!RecvAll(*sock, &val_len, 8, body).ok() || val_len > kMaxValueBytes) return;
    value.resize(val_len);
    if (!RecvAll(*sock, value.data(), val_len, body).ok()) return;
    if (!RecvAll(*sock, &timeout_ms, 4, body).ok()) return;
    uint8_t code = kReplyOk;
    std::string out;
    if (op == kOpSet) {
      table_.Set(key, value).IgnoreError();
    } else if (op == kOpGet) {
      auto v = table_.Get(key, std::chrono::milliseconds(timeout_ms));
      if (v.ok()) out = *v; else code = kReplyTimeout;
    } else if (op == kOpAdd && val_len == 8) {
      int64_t delta;
      std::memcpy(&delta, value.data(), 8);
      auto v = table_.Add(key, delta);
      if (v.ok()) Put<int64_t>(&out, *v); else code = kReplyBad;
    } else {
      code = kReplyBad;
    }
    Put<uint8_t>(&reply, code);
    Put<uint64_t>(&reply, out.size());
    reply += out;
    if (!SendAll(*sock, reply.data(), reply.size(), Clock::now() + kRequestBodyTimeout).ok()) return;
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
  std::string req;
  Put<uint8_t>(&req, op);
  Put<uint32_t>(&req, static_cast<uint32_t>(key.size()));
  req += key;
  Put<uint64_t>(&req, value.size());
  req += value;
  Put<uint32_t>(&req, static_cast<uint32_t>(std::min<int64_t>(timeout.count(), UINT32_MAX)));
  std::lock_guard<std::mutex> lock(mu_);
  Deadline deadline = DeadlineAfter(timeout + std::chrono::seconds(30));
  auto fail = [&](Status s) {
    return s.Prepend("TCP store " + endpoint_ + ": request for key '" + key + "' failed");
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
