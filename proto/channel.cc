// Channel: DEALER request/reply with ids and timeouts (see proto/channel.h).
#include "proto/channel.h"

#include <zmq.h>

#include "proto/wire.h"

namespace gantry::wire {

Status LoadCurveKeyFiles(const std::string& server_key_file, const std::string& client_key_file,
                         ChannelOptions* o) {
  if (server_key_file.empty() && client_key_file.empty()) return OkStatus();
  if (server_key_file.empty() || client_key_file.empty())
    return InvalidArgumentError(
        "CURVE needs both the coordinator's public key file and this client's secret key file "
        "(--server-key with --key/--client-key, or GANTRY_SERVER_KEY with GANTRY_CLIENT_KEY)");
  GANTRY_ASSIGN_OR_RETURN(o->server_public_key, ReadKeyFile(server_key_file));
  GANTRY_ASSIGN_OR_RETURN(o->secret_key, ReadKeyFile(client_key_file));
  const size_t dot = client_key_file.rfind('.');
  const size_t slash = client_key_file.rfind('/');
  const std::string stem = dot == std::string::npos || (slash != std::string::npos && dot < slash)
                               ? client_key_file
                               : client_key_file.substr(0, dot);
  GANTRY_ASSIGN_OR_RETURN(o->public_key, ReadKeyFile(stem + ".pub"));
  return OkStatus();
}

Status ApplyCurveClient(void* socket, const ChannelOptions& o) {
  const int set = !o.server_public_key.empty() + !o.public_key.empty() + !o.secret_key.empty();
  if (set == 0) return OkStatus();
  if (set != 3)
    return InvalidArgumentError(
        "CURVE needs the server public key and this client's public and "
        "secret keys together (--server-key, --key)");
  if (zmq_setsockopt(socket, ZMQ_CURVE_SERVERKEY, o.server_public_key.data(), 40) != 0 ||
      zmq_setsockopt(socket, ZMQ_CURVE_PUBLICKEY, o.public_key.data(), 40) != 0 ||
      zmq_setsockopt(socket, ZMQ_CURVE_SECRETKEY, o.secret_key.data(), 40) != 0)
    return ZmqError("setting CURVE client keys");
  return OkStatus();
}

StatusOr<std::unique_ptr<Channel>> Channel::Connect(const ChannelOptions& options) {
  GANTRY_RETURN_IF_ERROR(CheckEndpoint(options.endpoint, "coordinator endpoint"));
  void* s = zmq_socket(Context(), ZMQ_DEALER);
  if (!s) return ZmqError("creating a DEALER socket");
  const int linger = 0;
  zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof(linger));
  Status st = ApplyCurveClient(s, options);
  if (st.ok() && zmq_connect(s, options.endpoint.c_str()) != 0)
    st = ZmqError("connecting to coordinator " + options.endpoint);
  if (!st.ok()) {
    zmq_close(s);
    return st;
  }
  return std::unique_ptr<Channel>(new Channel(s, options));
}

Channel::~Channel() { zmq_close(socket_); }

StatusOr<proto::Envelope> Channel::Call(proto::Envelope request) {
  return Call(std::move(request), options_.timeout);
}

StatusOr<proto::Envelope> Channel::Call(proto::Envelope request,
                                        std::chrono::milliseconds timeout) {
  const uint64_t id = next_id_++;
  request.set_version(kProtocolVersion);
  request.set_request_id(id);
  if (request.token().empty()) request.set_token(options_.token);
  const std::string what = BodyName(request);
  GANTRY_RETURN_IF_ERROR(Send(socket_, Encode(request), nullptr, /*dont_wait=*/true)
                             .Prepend("sending " + what + " to " + options_.endpoint));
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    zmq_pollitem_t item{socket_, 0, ZMQ_POLLIN, 0};
    const int n = zmq_poll(&item, 1, std::max<long>(0, left.count()));
    if (n < 0) return ZmqError("waiting for the reply to " + what);
    if (n == 0) {
      return DeadlineExceededError("no reply from coordinator " + options_.endpoint + " to " +
                                   what + " within " + std::to_string(timeout.count()) +
                                   " ms: is it running (`gantry up` or `gantry coordinator`)?");
    }
    zmq_msg_t msg;
    zmq_msg_init(&msg);
    if (zmq_msg_recv(&msg, socket_, 0) < 0) {
      zmq_msg_close(&msg);
      return ZmqError("receiving the reply to " + what);
    }
    auto env = Decode(zmq_msg_data(&msg), zmq_msg_size(&msg), kHardMaxMessageBytes);
    zmq_msg_close(&msg);
    if (!env.ok()) return Status(env.status()).Prepend("reply to " + what);
    // A late reply to an earlier, timed-out call is skipped. An error with id 0 answers a
    // request the coordinator could not even read an id from: the one in flight.
    if (env->request_id() != id && !(env->request_id() == 0 && env->has_error())) continue;
    if (env->has_error()) return StatusFromError(env->error());
    return std::move(env).value();
  }
}

}  // namespace gantry::wire
