// HttpServer over real loopback sockets: /metrics, routing (exact, prefix, 404, 405), bodies,
// keep-alive, HEAD, bad requests, idle timeout, and Stop() with clients still connected.
#include "base/http_server.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>

#include "base/metrics.h"

namespace gantry {
namespace {

constexpr int kClientTimeoutS = 5;

// A blocking loopback client with receive/send timeouts, so a broken server fails the test
// instead of hanging it.
class Client {
 public:
  explicit Client(int port) {
    fd_ = socket(AF_INET, SOCK_STREAM, 0);
    timeval tv{kClientTimeoutS, 0};
    setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd_, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(uint16_t(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    connected_ = connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  }
  ~Client() { close(fd_); }
  bool connected() const { return connected_; }
  void Send(const std::string& s) { ASSERT_EQ(send(fd_, s.data(), s.size(), MSG_NOSIGNAL), ssize_t(s.size())); }
  // Reads one response (headers + Content-Length body); "" on EOF/timeout.
  std::string ReadResponse(bool head = false) {
    while (true) {
      size_t end = buf_.find("\r\n\r\n");
      if (end != std::string::npos) {
        size_t len = 0;
        size_t cl = buf_.find("Content-Length: ");
        if (cl != std::string::npos && cl < end && !head) len = std::stoul(buf_.substr(cl + 16));
        if (buf_.size() >= end + 4 + len) {
          std::string r = buf_.substr(0, end + 4 + len);
          buf_.erase(0, end + 4 + len);
          return r;
        }
      }
      char chunk[4096];
      ssize_t n = recv(fd_, chunk, sizeof(chunk), 0);
      if (n <= 0) return "";
      buf_.append(chunk, size_t(n));
    }
  }
  bool PeerClosed() {
    char c;
    return recv(fd_, &c, 1, 0) == 0;
  }

 private:
  int fd_;
  bool connected_ = false;
  std::string buf_;
};

std::string Body(const std::string& resp) { return resp.substr(resp.find("\r\n\r\n") + 4); }

class HttpServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    HttpServerOptions o;
    o.idle_timeout_ms = 300;
    o.io_timeout_ms = 2000;
    o.max_body_bytes = 1000;
    server_ = std::make_unique<HttpServer>(o);
    registry_.GetCounter("gantry_test_total", "Test counter", {{"kind", "unit"}}).Inc(42);
    ServeMetrics(*server_, registry_);
    server_->Route("POST", "/echo", [](const HttpRequest& r) {
      return HttpResponse::Json(200, "{\"len\":" + std::to_string(r.body.size()) + ",\"q\":\"" +
                                         r.query + "\",\"ct\":\"" + r.Header("content-type") + "\"}");
    });
    server_->RoutePrefix("GET", "/v1/", [](const HttpRequest& r) {
      return HttpResponse::Text(200, "v1:" + r.path);
    });
    server_->RoutePrefix("GET", "/v1/models/", [](const HttpRequest& r) {
      return HttpResponse::Text(200, "models:" + r.path);
    });
    server_->Route("GET", "/boom", [](const HttpRequest&) -> HttpResponse {
      throw std::runtime_error("kaput");
    });
    ASSERT_TRUE(server_->Start().ok());
    ASSERT_GT(server_->port(), 0);
  }
  MetricsRegistry registry_;
  std::unique_ptr<HttpServer> server_;
};

TEST_F(HttpServerTest, ServesMetrics) {
  Client c(server_->port());
  ASSERT_TRUE(c.connected());
  c.Send("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
  std::string r = c.ReadResponse();
  EXPECT_EQ(r.rfind("HTTP/1.1 200 OK\r\n", 0), 0u) << r;
  EXPECT_NE(r.find("Content-Type: text/plain; version=0.0.4"), std::string::npos);
  EXPECT_EQ(Body(r), registry_.RenderText());
  EXPECT_NE(Body(r).find("gantry_test_total{kind=\"unit\"} 42"), std::string::npos);
}

TEST_F(HttpServerTest, KeepAliveBodiesAndRouting) {
  Client c(server_->port());
  c.Send("POST /echo?x=1 HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: 5\r\n\r\nhello");
  std::string r = c.ReadResponse();
  EXPECT_NE(r.find("200 OK"), std::string::npos) << r;
  EXPECT_EQ(Body(r), "{\"len\":5,\"q\":\"x=1\",\"ct\":\"application/json\"}");
  // Same connection, two pipelined requests in one packet.
  c.Send("GET /v1/models/gpt HTTP/1.1\r\n\r\nGET /v1/x HTTP/1.1\r\n\r\n");
  EXPECT_EQ(Body(c.ReadResponse()), "models:/v1/models/gpt");  // longest prefix wins
  EXPECT_EQ(Body(c.ReadResponse()), "v1:/v1/x");
  c.Send("GET /nope HTTP/1.1\r\n\r\n");
  EXPECT_NE(c.ReadResponse().find("404 Not Found"), std::string::npos);
  c.Send("GET /echo HTTP/1.1\r\n\r\n");
  r = c.ReadResponse();
  EXPECT_NE(r.find("405 Method Not Allowed"), std::string::npos) << r;
  EXPECT_NE(r.find("Allow: POST"), std::string::npos) << r;
  c.Send("GET /boom HTTP/1.1\r\n\r\n");
  r = c.ReadResponse();
  EXPECT_NE(r.find("500 Internal Server Error"), std::string::npos);
  EXPECT_NE(r.find("kaput"), std::string::npos);
  c.Send("HEAD /metrics HTTP/1.1\r\n\r\n");
  r = c.ReadResponse(/*head=*/true);
  EXPECT_NE(r.find("200 OK"), std::string::npos);
  EXPECT_EQ(Body(r), "");
  c.Send("GET /metrics HTTP/1.1\r\nConnection: close\r\n\r\n");
  EXPECT_NE(c.ReadResponse().find("Connection: close"), std::string::npos);
  EXPECT_TRUE(c.PeerClosed());
}

TEST_F(HttpServerTest, RejectsBadRequests) {
  {
    Client c(server_->port());
    c.Send("NONSENSE\r\n\r\n");
    EXPECT_NE(c.ReadResponse().find("400 Bad Request"), std::string::npos);
    EXPECT_TRUE(c.PeerClosed());
  }
  {
    Client c(server_->port());
    c.Send("POST /echo HTTP/1.1\r\nContent-Length: 5000\r\n\r\n");
    EXPECT_NE(c.ReadResponse().find("413 Payload Too Large"), std::string::npos);
  }
  {
    Client c(server_->port());
    c.Send("POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n");
    EXPECT_NE(c.ReadResponse().find("411 Length Required"), std::string::npos);
  }
  {
    Client c(server_->port());
    c.Send("GET /metrics HTTP/2.0\r\n\r\n");
    EXPECT_NE(c.ReadResponse().find("505"), std::string::npos);
  }
  {
    Client c(server_->port());
    c.Send("POST /echo HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n");
    EXPECT_NE(c.ReadResponse().find("100 Continue"), std::string::npos);
    c.Send("abc");
    EXPECT_NE(Body(c.ReadResponse()).find("\"len\":3"), std::string::npos);
  }
}

TEST_F(HttpServerTest, IdleConnectionIsClosed) {
  Client c(server_->port());
  ASSERT_TRUE(c.connected());
  // idle_timeout_ms is 300: the server closes without a response well within the client's 5 s.
  EXPECT_TRUE(c.PeerClosed());
}

TEST_F(HttpServerTest, StopWithConnectedClients) {
  Client a(server_->port()), b(server_->port());
  a.Send("GET /metrics HTTP/1.1\r\n\r\n");
  EXPECT_NE(a.ReadResponse().find("200 OK"), std::string::npos);
  b.Send("GET /metr");  // half a request
  server_->Stop();
  EXPECT_TRUE(a.PeerClosed());
  server_->Stop();  // idempotent
  Client late(server_->port());
  EXPECT_FALSE(late.connected());
}

TEST(HttpServerStartTest, PortInUseIsAClearError) {
  HttpServer first;
  ASSERT_TRUE(first.Start().ok());
  HttpServerOptions o;
  o.port = first.port();
  HttpServer second(o);
  Status s = second.Start();
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.code(), StatusCode::kSystemError);
  EXPECT_NE(s.message().find("127.0.0.1:" + std::to_string(first.port())), std::string::npos)
      << s.message();
}

}  // namespace
}  // namespace gantry
