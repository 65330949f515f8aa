// Stores: MemoryStore and the TCP store (server + clients in this process), get-waits-for-set,
// add, timeouts naming the key, server shutdown waking waiters, the hello's checks (strangers,
// duplicate ranks, WORLD_SIZE, other jobs, a foreign listener), and env bootstrap (errors, the
// torchrun agent store's port, IPv6 MASTER_ADDR).
#include <gtest/gtest.h>

#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <thread>

#include "comm/bootstrap/bootstrap.h"
#include "comm/bootstrap/tcp_store.h"
#include "tests/unit/comm/free_ports.h"

namespace gantry::comm {
namespace {

using std::chrono::milliseconds;
using Opts = TcpStoreServer::Options;
using testing::FreePortPair;

StatusOr<std::unique_ptr<TcpStore>> Client(int port, int rank, int world, std::string job = "") {
  GANTRY_ASSIGN_OR_RETURN(auto c, TcpStore::Connect("127.0.0.1", port, milliseconds(2000)));
  GANTRY_RETURN_IF_ERROR(c->Identify({rank, world, std::move(job)}, milliseconds(5000)));
  return c;
}

// One raw request on a fresh connection (the wire format of tcp_store.h), as a stranger would
// send it; returns the reply code (-1: no reply) and leaves without a bye.
int RawRequest(int port, uint8_t op, const std::string& key, const std::string& value) {
  auto sock = Connect("127.0.0.1", port, DeadlineAfter(milliseconds(2000)));
  if (!sock.ok()) return -1;
  std::string req(1, static_cast<char>(op));
  const uint32_t key_len = key.size();
  const uint64_t val_len = value.size();
  const uint32_t timeout_ms = 0;
  req.append(reinterpret_cast<const char*>(&key_len), 4).append(key);
  req.append(reinterpret_cast<const char*>(&val_len), 8).append(value);
  req.append(reinterpret_cast<const char*>(&timeout_ms), 4);
  char reply[9];
  if (!SendAll(*sock, req.data(), req.size(), DeadlineAfter(milliseconds(2000))).ok() ||
      !RecvAll(*sock, reply, 9, DeadlineAfter(milliseconds(2000))).ok()) {
    return -1;
  }
  return static_cast<uint8_t>(reply[0]);
}

std::string Int64s(std::initializer_list<int64_t> values) {
  std::string out;
  for (int64_t v : values) out.append(reinterpret_cast<const char*>(&v), 8);
  return out;
}

void Conformance(Store& a, Store& b) {
  ASSERT_TRUE(a.Set("k", std::string("v\0x", 3)).ok());
  auto v = b.Get("k", milliseconds(1000));
  ASSERT_TRUE(v.ok()) << v.status().ToString();
  EXPECT_EQ(*v, std::string("v\0x", 3));
  std::thread later([&] {
    std::this_thread::sleep_for(milliseconds(50));
    a.Set("late", "x").IgnoreError();
  });
  EXPECT_EQ(*b.Get("late", milliseconds(5000)), "x");
  later.join();
  EXPECT_EQ(*a.Add("n", 5), 5);
  EXPECT_EQ(*b.Add("n", -2), 3);
  auto missing = b.Get("never", milliseconds(50));
  EXPECT_EQ(missing.status().code(), StatusCode::kDeadlineExceeded);
  EXPECT_NE(missing.status().message().find("never"), std::string::npos);
  EXPECT_TRUE(a.Wait({"k", "late"}, milliseconds(100)).ok());
}

TEST(Store, Memory) {
  MemoryStore s;
  Conformance(s, s);
}

TEST(Store, TcpServerAndClients) {
  auto server = TcpStoreServer::Start("127.0.0.1", 0);
  ASSERT_TRUE(server.ok()) << server.status().ToString();
  auto a = TcpStore::Connect("127.0.0.1", (*server)->port(), milliseconds(2000));
  auto b = TcpStore::Connect("127.0.0.1", (*server)->port(), milliseconds(2000));
  ASSERT_TRUE(a.ok() && b.ok());
  Conformance(**a, **b);
  EXPECT_EQ((*a)->LocalHost(), "127.0.0.1");
}

TEST(Store, ServerShutdownEndsWaitingGet) {
  auto server = TcpStoreServer::Start("127.0.0.1", 0);
  ASSERT_TRUE(server.ok());
  auto c = TcpStore::Connect("127.0.0.1", (*server)->port(), milliseconds(2000));
  ASSERT_TRUE(c.ok());
  std::thread stop([&] {
    std::this_thread::sleep_for(milliseconds(100));
    server->reset();
  });
  const auto start = std::chrono::steady_clock::now();
  auto v = (*c)->Get("x", milliseconds(60000));  // must end with the server, not in 60 s
  const auto waited = std::chrono::steady_clock::now() - start;
  stop.join();
  ASSERT_FALSE(v.ok());
  EXPECT_NE(v.status().code(), StatusCode::kDeadlineExceeded) << v.status().ToString();
  EXPECT_LT(waited, std::chrono::seconds(30)) << "the wait ran out instead of ending with the "
                                                 "server: " << v.status().ToString();
}

// A rank that identified itself and then dies (its connection drops without the clean close
// a destroyed client sends) fails every other rank's wait at once, naming it, instead of at the
// comm timeout. A client closed cleanly is no death.
TEST(Store, RankThatDiesFailsTheOthersWaitsAtOnce) {
  auto server = TcpStoreServer::Start("127.0.0.1", 0, Opts{.world_size = 3});
  ASSERT_TRUE(server.ok());
  const int port = (*server)->port();
  {
    auto clean = Client(port, 1, 3);
    ASSERT_TRUE(clean.ok()) << clean.status().ToString();
    ASSERT_TRUE((*clean)->Set("used", "").ok());
  }  // destroyed: says bye
  auto waiter = Client(port, 0, 3);
  ASSERT_TRUE(waiter.ok()) << waiter.status().ToString();
  EXPECT_EQ((*waiter)->Get("after-clean-close", milliseconds(300)).status().code(),
            StatusCode::kDeadlineExceeded)
      << "a clean close is not a death";
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {  // rank 2: identifies, uses the store, then "crashes" (no destructors run)
    auto c = Client(port, 2, 3);
    if (!c.ok() || !(*c)->Set("rank2", "x").ok()) _exit(1);
    std::this_thread::sleep_for(milliseconds(200));
    _exit(0);
  }
  const auto t0 = std::chrono::steady_clock::now();
  auto v = (*waiter)->Get("never-set", milliseconds(60000));
  const auto waited = std::chrono::steady_clock::now() - t0;
  int status = 0;
  waitpid(child, &status, 0);
  EXPECT_EQ(v.status().code(), StatusCode::kUnavailable) << v.status().ToString();
  EXPECT_NE(v.status().message().find("rank 2 disconnected"), std::string::npos)
      << v.status().ToString();
  EXPECT_LT(waited, std::chrono::seconds(10));
  // Later waits fail the same way; sets and adds still work (the job is failing anyway).
  EXPECT_EQ((*waiter)->Get("later", milliseconds(60000)).status().code(), StatusCode::kUnavailable);
}

// Connections beyond the cap are closed at once, and connections that ended are reaped (the
// server used to keep a thread and a socket per connection ever made).
TEST(Store, ConnectionsAreCappedAndReaped) {
  auto server = TcpStoreServer::Start("127.0.0.1", 0, Opts{.max_clients = 2});
  ASSERT_TRUE(server.ok());
  const int port = (*server)->port();
  // A connection the server serves; the previous round's threads may still be ending.
  auto served = [&]() -> std::unique_ptr<TcpStore> {
    for (int attempt = 0; attempt < 50; ++attempt) {
      auto c = TcpStore::Connect("127.0.0.1", port, milliseconds(2000));
      if (c.ok() && (*c)->Add("probe", 1).ok()) return std::move(c).value();
      std::this_thread::sleep_for(milliseconds(100));
    }
    return nullptr;
  };
  for (int round = 0; round < 5; ++round) {  // more connections than the cap, over time
    auto a = served();
    auto b = served();
    ASSERT_TRUE(a && b) << "round " << round << ": ended connections were not reaped";
    ASSERT_TRUE(a->Set("k" + std::to_string(round), "v").ok());
    ASSERT_TRUE(b->Get("k" + std::to_string(round), milliseconds(2000)).ok());
  }
  std::this_thread::sleep_for(milliseconds(1500));  // the last pair reaped
  auto a = TcpStore::Connect("127.0.0.1", port, milliseconds(2000));
  auto b = TcpStore::Connect("127.0.0.1", port, milliseconds(2000));
  auto c = TcpStore::Connect("127.0.0.1", port, milliseconds(2000));
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  int ok = 0;
  for (auto* s : {&a, &b, &c}) ok += (**s)->Set("x", "y").ok();
  EXPECT_EQ(ok, 2) << "the third connection is over the cap";
}

// A taken MASTER_PORT (e.g. a previous job still in TIME_WAIT or running) is an error naming
// the port, not a crash of rank 0.
TEST(Store, ServerOnATakenPortFailsCleanly) {
  auto first = TcpStoreServer::Start("127.0.0.1", 0);
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  auto second = TcpStoreServer::Start("127.0.0.1", (*first)->port());
  ASSERT_FALSE(second.ok());
  EXPECT_NE(second.status().message().find(std::to_string((*first)->port())), std::string::npos)
      << second.status().ToString();
}

// Hellos the store must refuse without harming the job: the old 8-byte hello (the probe that
// used to fail a 2-rank job with "rank 1 disconnected" before rank 1 started), a rank outside
// the world, and a rank that said hello and left before using the store. The real rank 1 then
// joins.
TEST(Store, StrangersHelloFailsNobody) {
  auto server = TcpStoreServer::Start("127.0.0.1", 0, Opts{.world_size = 2});
  ASSERT_TRUE(server.ok());
  const int port = (*server)->port();
  auto rank0 = Client(port, 0, 2);
  ASSERT_TRUE(rank0.ok()) << rank0.status().ToString();
  constexpr uint8_t kHello = 4, kRefused = 4, kOk = 0;
  EXPECT_EQ(RawRequest(port, kHello, "", Int64s({1})), kRefused) << "old-format hello as rank 1";
  EXPECT_EQ(RawRequest(port, kHello, "", Int64s({999})), kRefused);
  EXPECT_EQ(RawRequest(port, kHello, kTcpStoreProtocol, Int64s({999, 2})), kRefused);
  EXPECT_EQ(RawRequest(port, kHello, kTcpStoreProtocol, Int64s({-1, 2})), kRefused);
  // A well-formed hello as rank 1, then gone without a bye or any request: no death.
  EXPECT_EQ(RawRequest(port, kHello, kTcpStoreProtocol, Int64s({1, 2})), kOk);
  // The real rank 1 may come before the server's thread saw that connection close: its
  // place is free all the same (no sleep here: that race is part of the test).
  auto v = (*rank0)->Get("k", milliseconds(300));
  EXPECT_EQ(v.status().code(), StatusCode::kDeadlineExceeded) << v.status().ToString();
  auto rank1 = Client(port, 1, 2);
  ASSERT_TRUE(rank1.ok()) << "the real rank 1 could not join: " << rank1.status().ToString();
  ASSERT_TRUE((*rank1)->Set("k", "v").ok());
  EXPECT_EQ(*(*rank0)->Get("k", milliseconds(2000)), "v");
}

// Two live processes claiming one rank: the second is refused and every waiter fails at once,
// naming the rank and both addresses (the spare process used to fail with unrelated shm/tcp
// errors, or the job went on with it).
TEST(Store, DuplicateRankFailsTheJobNamingIt) {
  auto server = TcpStoreServer::Start("127.0.0.1", 0, Opts{.world_size = 2});
  ASSERT_TRUE(server.ok());
  const int port = (*server)->port();
  auto rank0 = Client(port, 0, 2);
  auto first = Client(port, 1, 2);
  ASSERT_TRUE(rank0.ok() && first.ok());
  auto second = Client(port, 1, 2);
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(second.status().message().find("two processes claim rank 1 (from 127.0.0.1:"),
            std::string::npos) << second.status().ToString();
  EXPECT_NE(second.status().message().find("check RANK"), std::string::npos);
  const auto t0 = std::chrono::steady_clock::now();
  auto v = (*rank0)->Get("never", milliseconds(60000));
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(30));
  EXPECT_EQ(v.status().code(), StatusCode::kUnavailable) << v.status().ToString();
  EXPECT_NE(v.status().message().find("two processes claim rank 1"), std::string::npos)
      << v.status().ToString();
  // A rank whose process closed cleanly frees its place (nothing to do with duplicates).
  auto server2 = TcpStoreServer::Start("127.0.0.1", 0, Opts{.world_size = 2});
  ASSERT_TRUE(server2.ok());
  { ASSERT_TRUE(Client((*server2)->port(), 1, 2).ok()); }
  EXPECT_TRUE(Client((*server2)->port(), 1, 2).ok());
}

// A rank started with another WORLD_SIZE fails at hello, and rank 0 at once, naming both values
// (it used to surface only at the comm timeout as "rank 2 did not publish").
TEST(Store, WorldSizeMismatchFailsBothSidesAtOnce) {
  auto server = TcpStoreServer::Start("127.0.0.1", 0, Opts{.world_size = 2});
  ASSERT_TRUE(server.ok());
  const int port = (*server)->port();
  auto rank0 = Client(port, 0, 2);
  ASSERT_TRUE(rank0.ok());
  auto rank1 = Client(port, 1, 3);
  ASSERT_FALSE(rank1.ok());
  for (const std::string& text : {std::string("rank 0 (hosting the TCP store) has WORLD_SIZE=2"),
                                  std::string("rank 1 (from 127.0.0.1:")}) {
    EXPECT_NE(rank1.status().message().find(text), std::string::npos) << rank1.status().ToString();
  }
  EXPECT_NE(rank1.status().message().find("has WORLD_SIZE=3"), std::string::npos);
  const auto t0 = std::chrono::steady_clock::now();
  auto v = (*rank0)->Get("never", milliseconds(60000));
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(30));
  EXPECT_EQ(v.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(v.status().message().find("WORLD_SIZE=3"), std::string::npos) << v.status().ToString();
}

// A rank of another job (or attempt) reaching this store is turned away; the job goes on.
TEST(Store, HelloFromAnotherJobIsRefused) {
  auto server = TcpStoreServer::Start("127.0.0.1", 0, Opts{.world_size = 2, .job = "job A"});
  ASSERT_TRUE(server.ok());
  const int port = (*server)->port();
  auto rank0 = Client(port, 0, 2, "job A");
  ASSERT_TRUE(rank0.ok());
  auto stale = Client(port, 1, 3, "job B");
  ASSERT_FALSE(stale.ok());
  EXPECT_NE(stale.status().message().find("two jobs share"), std::string::npos)
      << stale.status().ToString();
  EXPECT_EQ((*rank0)->Get("k", milliseconds(200)).status().code(), StatusCode::kDeadlineExceeded);
  EXPECT_TRUE(Client(port, 1, 2, "job A").ok());
}

// Another program on MASTER_PORT: one that never answers, and one that answers with something
// else. The hello says so within the given timeout (it used to wait a fixed 30 s and report
// "request for key '' failed: recv timed out").
TEST(Store, ForeignListenerIsNamedWithinTheTimeout) {
  auto silent = Listen("127.0.0.1", 0);
  ASSERT_TRUE(silent.ok());
  auto c = TcpStore::Connect("127.0.0.1", BoundPort(*silent), milliseconds(2000));
  ASSERT_TRUE(c.ok());  // the kernel completes the connection: nobody needs to accept it
  const auto t0 = std::chrono::steady_clock::now();
  Status s = (*c)->Identify({1, 2, ""}, milliseconds(1000));
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(20));
  EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition) << s.ToString();
  EXPECT_NE(s.message().find("does not speak Gantry's store protocol"), std::string::npos)
      << s.ToString();
  EXPECT_NE(s.message().find("1000 ms"), std::string::npos) << s.ToString();

  auto http = Listen("127.0.0.1", 0);
  ASSERT_TRUE(http.ok());
  std::thread answer([&] {
    auto peer = Accept(*http, DeadlineAfter(milliseconds(5000)));
    if (!peer.ok()) return;
    const std::string junk = "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n";
    SendAll(*peer, junk.data(), junk.size(), DeadlineAfter(milliseconds(2000))).IgnoreError();
    std::this_thread::sleep_for(milliseconds(500));
  });
  auto h = TcpStore::Connect("127.0.0.1", BoundPort(*http), milliseconds(2000));
  ASSERT_TRUE(h.ok());
  s = (*h)->Identify({1, 2, ""}, milliseconds(5000));
  answer.join();
  EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition) << s.ToString();
  EXPECT_NE(s.message().find("does not speak Gantry's store protocol"), std::string::npos)
      << s.ToString();
}

// The env bootstrap of one rank; checks that its store is the TCP store on `store_port`.
void ExpectStoreOnPort(const StatusOr<std::unique_ptr<Bootstrap>>& b, int store_port) {
  ASSERT_TRUE(b.ok()) << b.status().ToString();
  ASSERT_TRUE((*b)->store().Set("where", "here").ok());
  auto probe = TcpStore::Connect("127.0.0.1", store_port, milliseconds(2000));
  ASSERT_TRUE(probe.ok());
  auto v = (*probe)->Get("where", milliseconds(2000));
  EXPECT_TRUE(v.ok() && *v == "here") << "no store on port " << store_port;
}

// torchrun's default (static) rendezvous: its agent already listens on MASTER_PORT and sets
// TORCHELASTIC_USE_AGENT_STORE=True. Gantry's store then uses MASTER_PORT+1 (rank 0 used to
// fail with "Address already in use"); GANTRY_STORE_PORT overrides both.
TEST(Bootstrap, TorchrunAgentStoreMovesTheStoreToTheNextPort) {
  const int port = FreePortPair();
  ASSERT_GT(port, 0);
  auto agent = Listen("", port);  // torchrun's agent store
  ASSERT_TRUE(agent.ok());
  setenv("RANK", "0", 1);
  setenv("WORLD_SIZE", "1", 1);
  setenv("MASTER_ADDR", "127.0.0.1", 1);
  setenv("MASTER_PORT", std::to_string(port).c_str(), 1);
  for (const char* truth : {"True", "1", "TRUE"}) {
    SCOPED_TRACE(truth);
    setenv("TORCHELASTIC_USE_AGENT_STORE", truth, 1);
    ExpectStoreOnPort(BootstrapFromEnv(milliseconds(5000)), port + 1);
  }
  setenv("TORCHELASTIC_USE_AGENT_STORE", "False", 1);
  auto taken = BootstrapFromEnv(milliseconds(2000));
  ASSERT_FALSE(taken.ok());
  EXPECT_NE(taken.status().message().find("cannot host the TCP store on port " +
                                          std::to_string(port)), std::string::npos)
      << taken.status().ToString();
  const int chosen = FreePortPair();
  setenv("TORCHELASTIC_USE_AGENT_STORE", "True", 1);
  setenv("GANTRY_STORE_PORT", std::to_string(chosen).c_str(), 1);
  ExpectStoreOnPort(BootstrapFromEnv(milliseconds(5000)), chosen);
  setenv("GANTRY_STORE_PORT", "70000", 1);
  auto bad = BootstrapFromEnv(milliseconds(2000));
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("GANTRY_STORE_PORT"), std::string::npos);
  for (const char* name : {"RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
                           "TORCHELASTIC_USE_AGENT_STORE", "GANTRY_STORE_PORT"}) {
    unsetenv(name);
  }
}

bool HasIpv6Loopback() {
  return Listen("::1", 0).ok();
}

// MASTER_ADDR may be an IPv6 address, bare or bracketed: rank 0's store listens on IPv4 and
// IPv6 (it used to listen on IPv4 only, and rank 0 could not reach its own store at ::1).
TEST(Bootstrap, Ipv6MasterAddr) {
  if (!HasIpv6Loopback()) GTEST_SKIP() << "no IPv6 on loopback (::1)";
  auto any = Listen("", 0);  // all interfaces takes both families
  ASSERT_TRUE(any.ok());
  for (const char* host : {"127.0.0.1", "::1"}) {
    EXPECT_TRUE(Connect(host, BoundPort(*any), DeadlineAfter(milliseconds(2000))).ok()) << host;
  }
  const int port = FreePortPair();
  setenv("RANK", "0", 1);
  setenv("WORLD_SIZE", "1", 1);
  setenv("MASTER_PORT", std::to_string(port).c_str(), 1);
  for (const char* addr : {"::1", "[::1]"}) {
    SCOPED_TRACE(addr);
    setenv("MASTER_ADDR", addr, 1);
    auto b = BootstrapFromEnv(milliseconds(3000));
    ASSERT_TRUE(b.ok()) << b.status().ToString();
    EXPECT_EQ((*b)->advertise_host(), "::1");
  }
  setenv("MASTER_ADDR", ("[::1]:" + std::to_string(port)).c_str(), 1);
  auto b = BootstrapFromEnv(milliseconds(3000));
  ASSERT_FALSE(b.ok());
  EXPECT_EQ(b.status().code(), StatusCode::kInvalidArgument) << b.status().ToString();
  for (const char* name : {"RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"}) unsetenv(name);
}

TEST(Store, ConnectToNothingTimesOutWithAdvice) {
  auto c = TcpStore::Connect("127.0.0.1", 1, milliseconds(200));
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("MASTER_ADDR"), std::string::npos);
}

TEST(Bootstrap, EnvErrorsNameTheVariable) {
  unsetenv("RANK");
  unsetenv("JOB_COMPLETION_INDEX");
  auto b = BootstrapFromEnv(milliseconds(100));
  ASSERT_FALSE(b.ok());
  EXPECT_NE(b.status().message().find("RANK"), std::string::npos);
  setenv("RANK", "3", 1);
  setenv("WORLD_SIZE", "2", 1);
  b = BootstrapFromEnv(milliseconds(100));
  ASSERT_FALSE(b.ok());
  EXPECT_EQ(b.status().code(), StatusCode::kInvalidArgument);
  unsetenv("RANK");
  setenv("JOB_COMPLETION_INDEX", "0", 1);  // Kubernetes Indexed Job
  setenv("WORLD_SIZE", "1", 1);
  setenv("MASTER_ADDR", "127.0.0.1", 1);
  setenv("MASTER_PORT", "0", 1);
  b = BootstrapFromEnv(milliseconds(100));
  ASSERT_FALSE(b.ok());  // the index is taken as the rank; port 0 is not a valid MASTER_PORT
  EXPECT_NE(b.status().message().find("MASTER_PORT"), std::string::npos) << b.status().ToString();
  setenv("RANK", "one", 1);  // a malformed RANK is named, not replaced by the index
  b = BootstrapFromEnv(milliseconds(100));
  ASSERT_FALSE(b.ok());
  EXPECT_EQ(b.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(b.status().message().find("RANK='one'"), std::string::npos) << b.status().ToString();
  // host:port in MASTER_ADDR is named at once (it was retried for the whole timeout).
  setenv("RANK", "0", 1);
  setenv("MASTER_ADDR", "127.0.0.1:29611", 1);
  setenv("MASTER_PORT", "29611", 1);
  b = BootstrapFromEnv(milliseconds(60000));
  ASSERT_FALSE(b.ok());
  EXPECT_NE(b.status().message().find("looks like host:port"), std::string::npos)
      << b.status().ToString();
  unsetenv("RANK");
  unsetenv("JOB_COMPLETION_INDEX");
  unsetenv("WORLD_SIZE");
  unsetenv("MASTER_ADDR");
  unsetenv("MASTER_PORT");
}

TEST(Bootstrap, AllGatherInRankOrder) {
  auto store = std::make_shared<MemoryStore>();
  std::vector<std::vector<std::string>> got(3);
  std::vector<std::thread> t;
  for (int r = 0; r < 3; ++r) {
    t.emplace_back([&, r] {
      Bootstrap b(r, 3, store);
      auto scope = b.NewScope("x");
      got[r] = *b.AllGather(*scope, "blob", "r" + std::to_string(r), milliseconds(5000));
    });
  }
  for (auto& th : t) th.join();
  for (int r = 0; r < 3; ++r) EXPECT_EQ(got[r], (std::vector<std::string>{"r0", "r1", "r2"}));
}

}  // namespace
}  // namespace gantry::comm
