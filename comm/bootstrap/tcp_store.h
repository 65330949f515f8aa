// TcpStore: the Store over TCP, torchrun-style. Rank 0 runs a TcpStoreServer on
// MASTER_ADDR:MASTER_PORT; every rank (rank 0 too) talks to it through a TcpStore client.
// Wire format (little endian): request = op u8 | key_len u32 | key | val_len u64 | val |
// timeout_ms u32; reply = code u8 (0 ok, 1 timeout, 2 bad request, 3 the job failed, 4 hello
// refused) | len u64 | bytes. Ops: set, get, add, hello, bye (a clean close). The hello's key is
// kTcpStoreProtocol, its value rank i64 | world_size i64 | job, and the server answers it with
// kTcpStoreProtocol: a client learns at once whether MASTER_PORT speaks this protocol at all.
// The server keeps one thread per client connection (ranks are few), at most `max_clients` at
// once, and reaps those that ended. It refuses a hello from another job, with a rank outside
// the world, or on a second connection; a hello with another world size, or claiming a rank
// another live connection holds, fails the job. A client that said hello, used the store, and
// then drops its connection without bye is a rank that died. A failed job makes every Get
// waiting then, or later, fail at once with the reason (instead of at the comm timeout).
// Values are read as they arrive (a header claiming 64 MiB allocates nothing until the bytes
// come). Thread-safe client.
#pragma once

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "comm/bootstrap/store.h"
#include "comm/tcp/socket.h"

namespace gantry::comm {

inline constexpr char kTcpStoreProtocol[] = "gantry-tcp-store/2";

// Who a client is: checked by the server at hello.
struct TcpStoreIdentity {
  int rank = 0;
  int world_size = 0;
  std::string job;  // job identity (JobIdentityFromEnv); "" = not checked
};

class TcpStoreServer {
 public:
  struct Options {
    int world_size = 0;  // ranks in the job; 0 = unknown (hellos are not checked against it)
    std::string job;     // this job's identity; a hello naming another one is refused
    int max_clients = 1024;  // connections beyond it are closed at once
  };
  // Listens on host:port (port 0 = ephemeral; host "" = all interfaces, IPv4 and IPv6).
  static StatusOr<std::unique_ptr<TcpStoreServer>> Start(const std::string& host, int port,
                                                         Options options);
  static StatusOr<std::unique_ptr<TcpStoreServer>> Start(const std::string& host, int port) {
    return Start(host, port, Options());
  }
  ~TcpStoreServer();
  int port() const { return port_; }

 private:
  struct Conn {
    Socket sock;
    std::string peer;  // "ip:port", for messages
    std::thread thread;
    std::atomic<bool> done{false};
    int rank = -1;        // from an accepted hello
    bool used = false;    // a request after hello: its loss without bye is a death
    bool said_bye = false;
  };
  TcpStoreServer() = default;
  void AcceptLoop();
  void Serve(Conn* conn);
  void ReapFinished();
  // Checks a hello and records the claim; kReplyOk, or a refusal with `why` (failing the job
  // when the job itself is misconfigured).
  uint8_t Hello(Conn* conn, const std::string& key, const std::string& value, std::string* why);
  void ConnectionEnded(Conn* conn);
  // The first reason the job failed (a rank died, ranks disagree); "" while none.
  void FailJob(const std::string& why);
  std::string JobFailure();

  Socket listener_;
  int port_ = 0;
  Options options_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> failed_{false};
  std::mutex failure_mu_;
  std::string failure_;
  std::mutex claims_mu_;
  std::map<int, Conn*> claims_;  // rank -> the live connection that said hello as it
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
  // Tells the server which rank this client is (so that its disconnection without a clean
  // close, the destructor's bye, fails the other ranks' waits at once) and checks that the
  // server is a Gantry TCP store of this job. Waits at most min(`timeout`, 30 s) for the
  // answer. kFailedPrecondition: refused (the server's reason), or the listener on the port
  // does not speak this protocol.
  Status Identify(const TcpStoreIdentity& who, std::chrono::milliseconds timeout);
  ~TcpStore() override;
  // This host's address on the interface that reaches the server.
  std::string LocalHost() const { return socket_.LocalHost(); }

 private:
  struct Reply {
    uint8_t code;
    std::string body;
  };
  // One request and its reply; an I/O failure breaks the client (see broken_).
  StatusOr<Reply> Exchange(uint8_t op, const std::string& key, const std::string& value,
                           std::chrono::milliseconds wire_timeout, Deadline deadline);
  StatusOr<std::string> Call(uint8_t op, const std::string& key, const std::string& value,
                             std::chrono::milliseconds timeout);
  std::string endpoint_;
  std::mutex mu_;
  Socket socket_;
  Status broken_;  // a call failed midway: the stream is out of step, every later call fails
};

// The job identity ranks must share, from the environment: GANTRY_JOB_ID and GANTRY_ATTEMPT
// (set by a Gantry worker), else TORCHELASTIC_RUN_ID (torchrun), else PMIX_NAMESPACE
// (mpirun); "" when none is set.
std::string JobIdentityFromEnv();

}  // namespace gantry::comm
