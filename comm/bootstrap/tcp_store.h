// TcpStore: the Store over TCP, torchrun-style. Rank 0 runs a TcpStoreServer on
// MASTER_ADDR:MASTER_PORT; every rank (rank 0 too) talks to it through a TcpStore client.
// Wire format (little endian): request = op u8 | key_len u32 | key | val_len u64 | val |
// timeout_ms u32; reply = code u8 (0 ok, 1 timeout, 2 bad request, 3 a rank is gone) | len u64
// | bytes. Ops: set, get, add, hello (the client's rank), bye (a clean close).
// The server keeps one thread per client connection (ranks are few), at most `max_clients` at
// once, and reaps those that ended. A client that said hello and then drops its connection
// without bye is a rank that died: every Get waiting then, or later, fails at once naming it
// (instead of at the comm timeout). Values are read as they arrive (a header claiming 64 MiB
// allocates nothing until the bytes come). Thread-safe client.
#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "comm/bootstrap/store.h"
#include "comm/tcp/socket.h"

namespace gantry::comm {

class TcpStoreServer {
 public:
  // Listens on host:port (port 0 = ephemeral; host "" = all interfaces). Connections beyond
  // `max_clients` are closed at once.
  static StatusOr<std::unique_ptr<TcpStoreServer>> Start(const std::string& host, int port,
                                                         int max_clients = 1024);
  ~TcpStoreServer();
  int port() const { return port_; }

 private:
  struct Conn {
    Socket sock;
    std::thread thread;
    std::atomic<bool> done{false};
    int rank = -1;        // from hello
    bool said_bye = false;
  };
  TcpStoreServer() = default;
  void AcceptLoop();
  void Serve(Conn* conn);
  void ReapFinished();
  // The first rank that disconnected without bye, or -1.
  int DeadRank() const { return dead_rank_.load(std::memory_order_acquire); }

  Socket listener_;
  int port_ = 0;
  int max_clients_ = 1024;
  std::atomic<bool> stop_{false};
  std::atomic<int> dead_rank_{-1};
  std::atomic<uint64_t> table_bytes_{0};  // set so far, against kMaxTableBytes (1 GiB)
  MemoryStore table_;
  std::mutex mu_;
  std::vector<std::unique_ptr<Conn>> conns_;
  std::thread accept_thread_;
};

class TcpStore : public Store {
 public:
  // Connects, retrying until `timeout` (the server may start after the clients).
  static StatusOr<std::unique_ptr<TcpStore>> Connect(const std::string& host, int port,
                                                     std::chrono::milliseconds timeout);
  Status Set(const std::string& key, const std::string& value) override;
  StatusOr<std::string> Get(const std::string& key, std::chrono::milliseconds timeout) override;
  StatusOr<int64_t> Add(const std::string& key, int64_t delta) override;
  // Tells the server which rank this client is, so that its disconnection without a clean
  // close (the destructor's bye) fails the other ranks' waits at once.
  Status Identify(int rank);
  ~TcpStore() override;
  // This host's address on the interface that reaches the server.
  std::string LocalHost() const { return socket_.LocalHost(); }

 private:
  StatusOr<std::string> Call(uint8_t op, const std::string& key, const std::string& value,
                             std::chrono::milliseconds timeout);
  std::string endpoint_;
  std::mutex mu_;
  Socket socket_;
  Status broken_;  // a call failed midway: the stream is out of step, every later call fails
};

}  // namespace gantry::comm
