// Tokens file and the ZAP (ZeroMQ authentication protocol, RFC 27) handler.
#include "coordinator/security.h"

#include <zmq.h>

#include <fstream>
#include <sstream>
#include <vector>

#include "base/logging.h"
#include "proto/wire.h"

namespace gantry::coordinator {

StatusOr<std::map<std::string, TokenInfo>> ReadTokens(const std::string& path) {
  std::ifstream in(path);
  if (!in) return NotFoundError("cannot read tokens file " + path);
  std::map<std::string, TokenInfo> out;
  std::string line;
  for (int lineno = 1; std::getline(in, line); ++lineno) {
    std::istringstream ss(line);
    std::string token, tenant, flag;
    ss >> token;
    if (token.empty() || token[0] == '#') continue;
    ss >> tenant >> flag;
    if (tenant.empty() || (!flag.empty() && flag != "admin") || token.size() < 16)
      return InvalidArgumentError(path + ":" + std::to_string(lineno) +
                                  ": expected 'TOKEN TENANT [admin]' with a token of at least "
                                  "16 characters");
    out[token] = TokenInfo{tenant, flag == "admin"};
  }
  return out;
}

StatusOr<std::unique_ptr<ZapHandler>> ZapHandler::Start(std::set<std::string> allowed) {
  void* s = zmq_socket(wire::Context(), ZMQ_REP);
  if (!s) return wire::ZmqError("creating the ZAP socket");
  if (zmq_bind(s, "inproc://zeromq.zap.01") != 0) {
    Status st = wire::ZmqError("binding inproc://zeromq.zap.01");
    zmq_close(s);
    return st;
  }
  return std::unique_ptr<ZapHandler>(new ZapHandler(s, std::move(allowed)));
}

ZapHandler::ZapHandler(void* socket, std::set<std::string> allowed)
    : socket_(socket), allowed_(std::move(allowed)), thread_([this] { Loop(); }) {}

ZapHandler::~ZapHandler() {
  stop_ = true;
  thread_.join();
  zmq_close(socket_);
}

void ZapHandler::Loop() {
  while (!stop_) {
    zmq_pollitem_t item{socket_, 0, ZMQ_POLLIN, 0};
    if (zmq_poll(&item, 1, 100) <= 0) continue;
    std::vector<std::string> frames;
    int more = 1;
    while (more) {
      zmq_msg_t m;
      zmq_msg_init(&m);
      if (zmq_msg_recv(&m, socket_, 0) < 0) {
        zmq_msg_close(&m);
        break;
      }
      frames.emplace_back(static_cast<char*>(zmq_msg_data(&m)), zmq_msg_size(&m));
      more = zmq_msg_more(&m);
      zmq_msg_close(&m);
    }
    // version, request id, domain, address, identity, mechanism, credentials...
    if (frames.empty()) continue;  // nothing received: the REP socket still awaits a request
    if (frames.size() < 6) {
      // A REP socket must answer what it received before it can receive again (a `continue`
      // here stopped every later handshake): refuse it.
      const std::string reply[] = {"1.0", frames.size() > 1 ? frames[1] : "", "500",
                                   "malformed ZAP request", "", ""};
      for (int i = 0; i < 6; ++i)
        zmq_send(socket_, reply[i].data(), reply[i].size(), i < 5 ? ZMQ_SNDMORE : 0);
      continue;
    }
    bool ok = false;
    std::string key_z85;
    if (frames[5] == "CURVE" && frames.size() >= 7 && frames[6].size() == 32) {
      char z85[41] = {0};
      zmq_z85_encode(z85, reinterpret_cast<const uint8_t*>(frames[6].data()), 32);
      key_z85 = z85;
      ok = allowed_.count(key_z85) > 0;
    }
    if (!ok) {
      ++refused_;
      GANTRY_LOG(WARNING, "refused connection")
          .Field("peer", frames[3])
          .Field("mechanism", frames[5])
          .Field("public_key", key_z85)
          .Field("reason", "public key not in the allow-list");
    }
    const std::string reply[] = {"1.0",
                                 frames[1],
                                 ok ? "200" : "400",
                                 ok ? "OK" : "public key not allowed",
                                 ok ? key_z85 : "",
                                 ""};
    for (int i = 0; i < 6; ++i)
      zmq_send(socket_, reply[i].data(), reply[i].size(), i < 5 ? ZMQ_SNDMORE : 0);
  }
}

}  // namespace gantry::coordinator
