// A small HTTP/1.1 server on POSIX sockets: exact-path and prefix routes to handlers,
// keep-alive, Content-Length bodies, per-connection read/write and idle timeouts.
// One accept thread plus one thread per connection (bounded: excess connections get 503).
// Meant for control and scrape endpoints (/metrics, health, REST); not a general web server:
// no TLS, no chunked request bodies (411), no pipelining beyond sequential requests.
// Handlers run on connection threads, concurrently: they must be thread-safe.
#pragma once

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "base/status.h"

namespace gantry {

class MetricsRegistry;

struct HttpRequest {
  std::string method;  // "GET", "POST", ...
  std::string target;  // as sent: "/v1/models/x?verbose=1"
  std::string path;    // "/v1/models/x" (not percent-decoded)
  std::string query;   // "verbose=1"
  std::map<std::string, std::string> headers;  // lower-case names
  std::string body;
  std::string peer;  // "127.0.0.1:53412"
  std::string Header(const std::string& lower_name) const;
};

struct HttpResponse {
  int status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;  // extra headers
  static HttpResponse Text(int status, std::string body);
  static HttpResponse Json(int status, std::string body);
};

using HttpHandler = std::function<HttpResponse(const HttpRequest&)>;

struct HttpServerOptions {
  std::string host = "127.0.0.1";  // "0.0.0.0" to listen on every interface
  int port = 0;                    // 0 = pick a free port (see HttpServer::port())
  int io_timeout_ms = -1;          // < 0: GANTRY_HTTP_IO_TIMEOUT_MS (10000)
  int idle_timeout_ms = -1;        // < 0: GANTRY_HTTP_IDLE_TIMEOUT_MS (30000)
  int max_connections = -1;        // < 0: GANTRY_HTTP_MAX_CONNECTIONS (256)
  // Larger request bodies get 413 before they are read. < 0: GANTRY_HTTP_MAX_BODY_BYTES
  // (1 MiB); a server with routes that take big bodies sets its own.
  int64_t max_body_bytes = -1;
};

class HttpServer {
 public:
  explicit HttpServer(HttpServerOptions options = {});
  ~HttpServer();  // Stop()
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Register before Start(). `method` "" matches any method. Exact routes win over prefix
  // routes; the longest matching prefix wins. No route: 404; path known, method not: 405.
  void Route(const std::string& method, const std::string& path, HttpHandler handler);
  void RoutePrefix(const std::string& method, const std::string& prefix, HttpHandler handler);

  // Binds and starts serving. Errors: kSystemError (bind/listen failed, with the address).
  Status Start();
  // Stops accepting, closes live connections, joins every thread. Idempotent.
  void Stop();
  int port() const { return port_; }

 private:
  struct Route_ {
    std::string method, path;
    bool prefix;
    HttpHandler handler;
  };
  struct Conn {
    int fd;
    std::thread thread;
    std::atomic<bool> done{false};
  };
  void AcceptLoop();
  void ServeConnection(Conn* conn, std::string peer);
  HttpResponse Dispatch(const HttpRequest& req) const;
  void ReapFinished(bool all);

  HttpServerOptions opt_;
  std::vector<Route_> routes_;
  int listen_fd_ = -1;
  int wake_pipe_[2] = {-1, -1};
  int port_ = 0;
  std::atomic<bool> stopping_{false};
  std::thread accept_thread_;
  std::mutex conns_mu_;
  std::vector<std::unique_ptr<Conn>> conns_;
};

// GET /metrics -> registry.RenderText() with the Prometheus content type.
void ServeMetrics(HttpServer& server, const MetricsRegistry& registry);
// A started HttpServer on host:port (0 = a free port, see port()) serving `registry` at
// GET /metrics; Start()'s error as it is otherwise (callers name their flag).
StatusOr<std::unique_ptr<HttpServer>> StartMetricsServer(const std::string& host, int port,
                                                         const MetricsRegistry& registry);

// "OK", "Not Found", ... for a status code.
const char* HttpReasonPhrase(int status);

}  // namespace gantry
