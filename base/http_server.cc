// HttpServer: listening socket, accept loop, per-connection request parsing and replies.
#include "base/http_server.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <chrono>
#include <thread>
#include <cstring>

#include "base/logging.h"
#include "base/metrics.h"
#include "base/tunables.h"

namespace gantry {
namespace {

constexpr size_t kMaxHeaderBytes = 64 * 1024;
using Clock = std::chrono::steady_clock;

int MsLeft(Clock::time_point deadline) {
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
  return ms < 0 ? 0 : int(ms);
}

// Waits for `events` on fd; false on timeout, error or hang-up without data.
bool WaitFd(int fd, short events, int timeout_ms) {
  pollfd p{fd, events, 0};
  while (true) {
    int r = ::poll(&p, 1, timeout_ms);
    if (r < 0 && errno == EINTR) continue;
    return r > 0 && (p.revents & (events | POLLHUP | POLLERR));
  }
}

bool SendAll(int fd, std::string_view data, int timeout_ms) {
  auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  while (!data.empty()) {
    ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      data.remove_prefix(size_t(n));
    } else if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
      if (!WaitFd(fd, POLLOUT, MsLeft(deadline)) || MsLeft(deadline) == 0) return false;
    } else {
      return false;
    }
  }
  return true;
}

std::string Lower(std::string s) {
  for (char& c : s) c = char(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

std::string Trim(const std::string& s) {
  size_t b = s.find_first_not_of(" \t"), e = s.find_last_not_of(" \t");
  return b == std::string::npos ? "" : s.substr(b, e - b + 1);
}

// Parses request line and headers (text before "\r\n\r\n"); 0 or an HTTP error status.
int ParseHead(const std::string& head, HttpRequest* req) {
  size_t eol = head.find("\r\n");
  std::string line = head.substr(0, eol);
  size_t sp1 = line.find(' '), sp2 = line.rfind(' ');
  if (sp1 == std::string::npos || sp2 == sp1) return 400;
  req->method = line.substr(0, sp1);
  req->target = line.substr(sp1 + 1, sp2 - sp1 - 1);
  std::string version = line.substr(sp2 + 1);
  if (version != "HTTP/1.1" && version != "HTTP/1.0") return 505;
  if (req->target.empty() || req->target[0] != '/') return 400;
  size_t q = req->target.find('?');
  req->path = req->target.substr(0, q);
  req->query = q == std::string::npos ? "" : req->target.substr(q + 1);
  if (version == "HTTP/1.0") req->headers["__version"] = "1.0";
  size_t pos = eol == std::string::npos ? head.size() : eol + 2;
  while (pos < head.size()) {
    size_t end = head.find("\r\n", pos);
    if (end == std::string::npos) end = head.size();
    std::string h = head.substr(pos, end - pos);
    pos = end + 2;
    size_t colon = h.find(':');
    if (colon == std::string::npos || colon == 0) return 400;
    std::string name = Lower(h.substr(0, colon));
    std::string value = Trim(h.substr(colon + 1));
    auto [it, inserted] = req->headers.emplace(name, value);
    if (!inserted) it->second += ", " + value;
  }
  return 0;
}

bool KeepAlive(const HttpRequest& req) {
  std::string conn = Lower(req.Header("connection"));
  if (req.headers.count("__version")) return conn == "keep-alive";
  return conn != "close";
}

std::string Serialize(const HttpResponse& r, bool keep_alive, bool head_only) {
  std::string out = "HTTP/1.1 " + std::to_string(r.status) + " " + HttpReasonPhrase(r.status) +
                    "\r\nContent-Type: " + r.content_type +
                    "\r\nContent-Length: " + std::to_string(r.body.size()) + "\r\n";
  for (const auto& [k, v] : r.headers) out += k + ": " + v + "\r\n";
  out += keep_alive ? "Connection: keep-alive\r\n\r\n" : "Connection: close\r\n\r\n";
  if (!head_only) out += r.body;
  return out;
}

}  // namespace

std::string HttpRequest::Header(const std::string& lower_name) const {
  auto it = headers.find(lower_name);
  return it == headers.end() ? "" : it->second;
}

HttpResponse HttpResponse::Text(int status, std::string body) {
  HttpResponse r;
  r.status = status;
  r.body = std::move(body);
  return r;
}

HttpResponse HttpResponse::Json(int status, std::string body) {
  HttpResponse r;
  r.status = status;
  r.content_type = "application/json";
  r.body = std::move(body);
  return r;
}

const char* HttpReasonPhrase(int status) {
  switch (status) {
    case 100: return "Continue";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 411: return "Length Required";
    case 413: return "Payload Too Large";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default: return "Unknown";
  }
}

HttpServer::HttpServer(HttpServerOptions options) : opt_(std::move(options)) {
  if (opt_.io_timeout_ms < 0) opt_.io_timeout_ms = int(TunableInt("HTTP_IO_TIMEOUT_MS", 10000));
  if (opt_.idle_timeout_ms < 0) {
    opt_.idle_timeout_ms = int(TunableInt("HTTP_IDLE_TIMEOUT_MS", 30000));
  }
  if (opt_.max_connections < 0) {
    opt_.max_connections = int(TunableInt("HTTP_MAX_CONNECTIONS", 256));
  }
  if (opt_.max_body_bytes < 0) opt_.max_body_bytes = TunableInt("HTTP_MAX_BODY_BYTES", 1 << 20);
}

HttpServer::~HttpServer() { Stop(); }

void HttpServer::Route(const std::string& method, const std::string& path, HttpHandler h) {
  routes_.push_back({method, path, false, std::move(h)});
}

void HttpServer::RoutePrefix(const std::string& method, const std::string& prefix,
                             HttpHandler h) {
  routes_.push_back({method, prefix, true, std::move(h)});
}

Status HttpServer::Start() {
  if (opt_.port < 0 || opt_.port > 65535) {
    return InvalidArgumentError("http server: port " + std::to_string(opt_.port) +
                                " is not in 0..65535");
  }
  std::string where = opt_.host + ":" + std::to_string(opt_.port);
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* res = nullptr;
  int gai = getaddrinfo(opt_.host.c_str(), std::to_string(opt_.port).c_str(), &hints, &res);
  if (gai != 0) {
    return InvalidArgumentError("http server: cannot resolve '" + opt_.host + "': " +
                                gai_strerror(gai));
  }
  std::unique_ptr<addrinfo, decltype(&freeaddrinfo)> guard(res, freeaddrinfo);
  int fd = ::socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return ErrnoError("http server: socket() for " + where, errno);
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (::bind(fd, res->ai_addr, res->ai_addrlen) != 0 || ::listen(fd, 128) != 0) {
    int err = errno;
    ::close(fd);
    return ErrnoError("http server: cannot listen on " + where +
                          " (is the port in use? choose another port or 0)", err);
  }
  sockaddr_storage addr{};
  socklen_t len = sizeof(addr);
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  port_ = ntohs(addr.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&addr)->sin6_port
                                           : reinterpret_cast<sockaddr_in*>(&addr)->sin_port);
  if (::pipe2(wake_pipe_, O_CLOEXEC) != 0) {
    ::close(fd);
    return ErrnoError("http server: pipe2", errno);
  }
  listen_fd_ = fd;
  stopping_ = false;
  accept_thread_ = std::thread([this] { AcceptLoop(); });
  GANTRY_LOG(DEBUG, "http server listening").Field("host", opt_.host).Field("port", port_);
  return OkStatus();
}

void HttpServer::Stop() {
  if (listen_fd_ < 0) return;
  stopping_ = true;
  char c = 1;
  [[maybe_unused]] ssize_t n = ::write(wake_pipe_[1], &c, 1);
  if (accept_thread_.joinable()) accept_thread_.join();
  {
    std::lock_guard<std::mutex> lock(conns_mu_);
    for (auto& conn : conns_) ::shutdown(conn->fd, SHUT_RDWR);  // wakes blocked polls
  }
  ReapFinished(true);
  ::close(listen_fd_);
  ::close(wake_pipe_[0]);
  ::close(wake_pipe_[1]);
  listen_fd_ = wake_pipe_[0] = wake_pipe_[1] = -1;
}

void HttpServer::ReapFinished(bool all) {
  std::vector<std::unique_ptr<Conn>> finished;
  {
    std::lock_guard<std::mutex> lock(conns_mu_);
    for (auto it = conns_.begin(); it != conns_.end();) {
      if (all || (*it)->done) {
        finished.push_back(std::move(*it));
        it = conns_.erase(it);
      } else {
        ++it;
      }
    }
  }
  for (auto& conn : finished) {
    conn->thread.join();
    ::close(conn->fd);  // closed only after its thread ended: the fd number cannot be reused
  }
}

void HttpServer::AcceptLoop() {
  while (!stopping_) {
    pollfd fds[2] = {{listen_fd_, POLLIN, 0}, {wake_pipe_[0], POLLIN, 0}};
    int r = ::poll(fds, 2, 1000);
    if (stopping_) break;
    if (r <= 0 || !(fds[0].revents & POLLIN)) {
      ReapFinished(false);
      continue;
    }
    sockaddr_storage addr{};
    socklen_t len = sizeof(addr);
    int fd = ::accept4(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len, SOCK_CLOEXEC);
    if (fd < 0) {
      // Out of descriptors: the listener stays readable, so back off instead of spinning.
      if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
        ReapFinished(false);
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
      }
      continue;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    char host[INET6_ADDRSTRLEN] = "?";
    char serv[16] = "?";
    getnameinfo(reinterpret_cast<sockaddr*>(&addr), len, host, sizeof(host), serv, sizeof(serv),
                NI_NUMERICHOST | NI_NUMERICSERV);
    ReapFinished(false);
    std::lock_guard<std::mutex> lock(conns_mu_);
    if (int(conns_.size()) >= opt_.max_connections) {
      SendAll(fd, Serialize(HttpResponse::Text(503, "too many connections; retry later\n"),
                            false, false), 100);
      ::close(fd);
      continue;
    }
    auto conn = std::make_unique<Conn>();
    conn->fd = fd;
    Conn* raw = conn.get();
    std::string peer = std::string(host) + ":" + serv;
    conn->thread = std::thread([this, raw, peer] { ServeConnection(raw, peer); });
    conns_.push_back(std::move(conn));
  }
}

namespace {

enum class ReadOutcome { kRequest, kClosed, kError };

// Reads one request into *req from fd (bytes after it stay in *buf). On a malformed or
// over-limit request sets *error_status and returns kError.
ReadOutcome ReadRequest(int fd, std::string* buf, HttpRequest* req, int* error_status,
                        int idle_timeout_ms, int io_timeout_ms, int64_t max_body,
                        const std::atomic<bool>& stopping) {
  auto deadline = Clock::now() + std::chrono::milliseconds(io_timeout_ms);
  bool started = !buf->empty();
  size_t head_end = std::string::npos;
  int64_t body_len = -1;
  char chunk[16384];
  while (true) {
    if (head_end == std::string::npos) {
      head_end = buf->find("\r\n\r\n");
      if (head_end == std::string::npos && buf->size() > kMaxHeaderBytes) {
        return *error_status = 431, ReadOutcome::kError;
      }
      if (head_end != std::string::npos) {
        if (int st = ParseHead(buf->substr(0, head_end), req); st != 0) {
          return *error_status = st, ReadOutcome::kError;
        }
        if (!req->Header("transfer-encoding").empty()) {
          return *error_status = 411, ReadOutcome::kError;
        }
        std::string cl = req->Header("content-length");
        body_len = 0;
        if (!cl.empty()) {
          auto [p, ec] = std::from_chars(cl.data(), cl.data() + cl.size(), body_len);
          if (ec != std::errc() || p != cl.data() + cl.size() || body_len < 0) {
            return *error_status = 400, ReadOutcome::kError;
          }
        }
        if (body_len > max_body) return *error_status = 413, ReadOutcome::kError;
        if (Lower(req->Header("expect")) == "100-continue" &&
            buf->size() < head_end + 4 + size_t(body_len)) {
          SendAll(fd, "HTTP/1.1 100 Continue\r\n\r\n", io_timeout_ms);
        }
      }
    }
    if (head_end != std::string::npos && buf->size() >= head_end + 4 + size_t(body_len)) {
      req->body = buf->substr(head_end + 4, size_t(body_len));
      buf->erase(0, head_end + 4 + size_t(body_len));
      return ReadOutcome::kRequest;
    }
    int wait_ms = started ? MsLeft(deadline) : idle_timeout_ms;
    if (stopping || !WaitFd(fd, POLLIN, wait_ms)) {
      if (!started || stopping) return ReadOutcome::kClosed;
      return *error_status = 408, ReadOutcome::kError;
    }
    ssize_t n = ::recv(fd, chunk, sizeof(chunk), 0);
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (n <= 0) return ReadOutcome::kClosed;
    if (!started) deadline = Clock::now() + std::chrono::milliseconds(io_timeout_ms);
    started = true;
    buf->append(chunk, size_t(n));
  }
}

}  // namespace

void HttpServer::ServeConnection(Conn* conn, std::string peer) {
  std::string buf;
  while (!stopping_) {
    HttpRequest req;
    req.peer = peer;
    int error_status = 0;
    ReadOutcome r = ReadRequest(conn->fd, &buf, &req, &error_status, opt_.idle_timeout_ms,
                                opt_.io_timeout_ms, opt_.max_body_bytes, stopping_);
    if (r == ReadOutcome::kClosed) break;
    if (r == ReadOutcome::kError) {
      std::string why = error_status == 411 ? "chunked request bodies are not supported; send "
                                              "Content-Length\n"
                                            : std::string(HttpReasonPhrase(error_status)) + "\n";
      SendAll(conn->fd, Serialize(HttpResponse::Text(error_status, why), false, false),
              opt_.io_timeout_ms);
      break;
    }
    HttpResponse resp = Dispatch(req);
    bool keep = KeepAlive(req) && !stopping_;
    if (!SendAll(conn->fd, Serialize(resp, keep, req.method == "HEAD"), opt_.io_timeout_ms) ||
        !keep) {
      break;
    }
  }
  ::shutdown(conn->fd, SHUT_RDWR);
  conn->done = true;
}

HttpResponse HttpServer::Dispatch(const HttpRequest& req) const {
  auto method_ok = [&](const Route_& r) {
    return r.method.empty() || r.method == req.method ||
           (req.method == "HEAD" && r.method == "GET");
  };
  const Route_* best = nullptr;
  bool path_known = false;
  std::string allow;
  for (const Route_& r : routes_) {
    bool match = r.prefix ? req.path.rfind(r.path, 0) == 0 : req.path == r.path;
    if (!match) continue;
    if (!method_ok(r)) {
      path_known = true;
      allow += (allow.empty() ? "" : ", ") + r.method;
      continue;
    }
    if (best == nullptr || (best->prefix && !r.prefix) ||
        (best->prefix && r.prefix && r.path.size() > best->path.size())) {
      best = &r;
    }
  }
  if (best == nullptr) {
    if (path_known) {
      HttpResponse resp = HttpResponse::Text(405, "method " + req.method + " not allowed on " +
                                                      req.path + "\n");
      resp.headers.emplace_back("Allow", allow);
      return resp;
    }
    return HttpResponse::Text(404, "no handler for " + req.path + "\n");
  }
  try {
    return best->handler(req);
  } catch (const std::exception& e) {
    GANTRY_LOG(ERROR, "http handler threw").Field("path", req.path).Field("what", e.what());
    return HttpResponse::Text(500, std::string("internal error: ") + e.what() + "\n");
  }
}

void ServeMetrics(HttpServer& server, const MetricsRegistry& registry) {
  server.Route("GET", "/metrics", [&registry](const HttpRequest&) {
    HttpResponse r;
    r.content_type = MetricsRegistry::kContentType;
    r.body = registry.RenderText();
    return r;
  });
}

StatusOr<std::unique_ptr<HttpServer>> StartMetricsServer(const std::string& host, int port,
                                                         const MetricsRegistry& registry) {
  HttpServerOptions options;
  options.host = host;
  options.port = port;
  options.max_body_bytes = 0;  // GET /metrics only: a request with a body gets 413 unread
  auto server = std::make_unique<HttpServer>(options);
  ServeMetrics(*server, registry);
  GANTRY_RETURN_IF_ERROR(server->Start());
  return server;
}

}  // namespace gantry
