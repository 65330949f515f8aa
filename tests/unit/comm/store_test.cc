// Stores: MemoryStore and the TCP store (server + clients in this process), get-waits-for-set,
// add, timeouts naming the key, server shutdown waking waiters, and env bootstrap errors.
#include <gtest/gtest.h>

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
  auto v = (*c)->Get("x", milliseconds(60000));  // must end with the server, not in 60 s
  stop.join();
  EXPECT_FALSE(v.ok());
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
