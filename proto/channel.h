// Channel: a DEALER socket to the coordinator for request/reply calls (cli, trainer KV).
// Each Call stamps version, request id and token, waits up to its timeout for the reply with
// the same id (stale replies of earlier timed-out calls are dropped), and turns an Error reply
// into a Status. Not thread-safe: one thread owns a Channel (ZeroMQ sockets are single-owner).
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "base/status.h"
#include "proto/gantry.pb.h"

namespace gantry::wire {

struct ChannelOptions {
  std::string endpoint;                      // tcp://127.0.0.1:7450
  std::chrono::milliseconds timeout{10000};  // default per-call timeout
  std::string token;                         // user or per-attempt token
  // CURVE (all three set, or none): the coordinator's public key and this client's keys.
  std::string server_public_key;
  std::string public_key;
  std::string secret_key;
};

class Channel {
 public:
  static StatusOr<std::unique_ptr<Channel>> Connect(const ChannelOptions& options);
  ~Channel();
  Channel(const Channel&) = delete;
  Channel& operator=(const Channel&) = delete;

  // Sends `request` and returns the reply body (never an Error envelope). kDeadlineExceeded
  // names the endpoint and the request when no reply arrives in time.
  StatusOr<proto::Envelope> Call(proto::Envelope request);
  StatusOr<proto::Envelope> Call(proto::Envelope request, std::chrono::milliseconds timeout);
  const std::string& endpoint() const { return options_.endpoint; }

 private:
  Channel(void* socket, ChannelOptions options) : socket_(socket), options_(std::move(options)) {}
  void* socket_;
  ChannelOptions options_;
  uint64_t next_id_ = 1;
};

// Reads CURVE keys from files into `o`: the coordinator's public key (`server_key_file`) and
// this client's secret key (`client_key_file`, with NAME.pub beside it). Both empty: no CURVE.
Status LoadCurveKeyFiles(const std::string& server_key_file, const std::string& client_key_file,
                         ChannelOptions* o);
// Key files a rank uses to reach a CURVE-secured coordinator; its worker sets them.
inline constexpr char kServerKeyEnv[] = "GANTRY_SERVER_KEY";
inline constexpr char kClientKeyEnv[] = "GANTRY_CLIENT_KEY";

// Applies CURVE client options to a socket (used by Channel and the worker's DEALER).
Status ApplyCurveClient(void* socket, const ChannelOptions& options);

}  // namespace gantry::wire
