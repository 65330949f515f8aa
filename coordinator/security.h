// Coordinator security pieces: the user-token table (token -> tenant) and the ZAP handler
// that admits only allow-listed CURVE public keys. The ZAP handler owns its own REP socket on
// its own thread (ZeroMQ calls it for every new connection); refusals are logged.
#pragma once

#include <atomic>
#include <map>
#include <set>
#include <string>
#include <thread>

#include "base/status.h"

namespace gantry::coordinator {

struct TokenInfo {
  std::string tenant;
  bool admin = false;  // may cancel any tenant's jobs
};

// Parses "TOKEN TENANT [admin]" lines ('#' comments). Errors name file:line.
StatusOr<std::map<std::string, TokenInfo>> ReadTokens(const std::string& path);

class ZapHandler {
 public:
  // Binds inproc://zeromq.zap.01 (must happen before the server socket binds).
  static StatusOr<std::unique_ptr<ZapHandler>> Start(std::set<std::string> allowed_z85);
  ~ZapHandler();  // stops and joins the thread
  int64_t refused() const { return refused_.load(); }

 private:
  ZapHandler(void* socket, std::set<std::string> allowed);
  void Loop();
  void* socket_;
  std::set<std::string> allowed_;
  std::atomic<bool> stop_{false};
  std::atomic<int64_t> refused_{0};
  std::thread thread_;
};

}  // namespace gantry::coordinator
