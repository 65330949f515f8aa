// TcpStore: the Store over TCP, torchrun-style. Rank 0 runs a TcpStoreServer on
// MASTER_ADDR:MASTER_PORT; every rank (rank 0 too) talks to it through a TcpStore client.
// Wire format (little endian): request = op u8 | key_len u32 | key | val_len u64 | val |
// timeout_ms u32; reply = code u8 (0 ok, 1 timeout, 2 bad request) | len u64 | bytes.
// The server keeps one thread per client connection (ranks are few); thread-safe client.
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
  // Listens on host:port (port 0 = ephemeral; host "" = all interfaces).
  static StatusOr<std::unique_ptr<TcpStoreServer>> Start(const std::string& host, int port);
  ~TcpStoreServer();
  int port() const { return port_; }

 private:
  TcpStoreServer() = default;
  void AcceptLoop();
  void Serve(int index);

  Socket listener_;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  MemoryStore table_;
  std::mutex mu_;
  std::vector<std::unique_ptr<Socket>> clients_;
  std::vector<std::thread> threads_;
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
  // This host's address on the interface that reaches the server.
  std::string LocalHost() const { return socket_.LocalHost(); }

 private:
  StatusOr<std::string> Call(uint8_t op, const std::string& key, const std::string& value,
                             std::chrono::milliseconds timeout);
  std::string endpoint_;
  std::mutex mu_;
  Socket socket_;
};

}  // namespace gantry::comm
