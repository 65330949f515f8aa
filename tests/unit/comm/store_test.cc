// Stores: MemoryStore and the TCP store (server + clients in this process), get-waits-for-set,
// add, timeouts naming the key, server shutdown waking waiters, and env bootstrap errors.
#include <gtest/gtest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <thread>

#include "comm/bootstrap/bootstrap.h"
#include "comm/bootstrap/tcp_store.h"

namespace gantry::comm {
namespace {

using std::chrono::milliseconds;

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
  auto server = TcpStoreServer::Start("127.0.0.1", 0);
  ASSERT_TRUE(server.ok());
  const int port = (*server)->port();
  {
    auto clean = TcpStore::Connect("127.0.0.1", port, milliseconds(2000));
    ASSERT_TRUE(clean.ok());
    ASSERT_TRUE((*clean)->Identify(1).ok());
  }  // destroyed: says bye
  auto waiter = TcpStore::Connect("127.0.0.1", port, milliseconds(2000));
  ASSERT_TRUE(waiter.ok());
  ASSERT_TRUE((*waiter)->Identify(0).ok());
  EXPECT_EQ((*waiter)->Get("after-clean-close", milliseconds(300)).status().code(),
            StatusCode::kDeadlineExceeded)
      << "a clean close is not a death";
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {  // rank 2: identifies, then "crashes" (no destructors run)
    auto c = TcpStore::Connect("127.0.0.1", port, milliseconds(2000));
    if (!c.ok() || !(*c)->Identify(2).ok()) _exit(1);
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
  auto server = TcpStoreServer::Start("127.0.0.1", 0, /*max_clients=*/2);
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
