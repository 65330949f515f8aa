// Ceph fault behaviour against the dev cluster (label ceph, run serially): a wrong key, a
// missing pool and an unreadable conf fail at open with clear errors; a stopped OSD (SIGSTOP
// by PID from $GANTRY_CEPH_DIR) makes a read fail within its timeout, or succeed when the OSD
// returns within the retries. Never leaves the OSD stopped (RAII SIGCONT).
#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <thread>

#include "storage/object_store.h"
#include "tests/unit/storage/store_test_env.h"

namespace gantry::storage::testing {
namespace {

using Clock = std::chrono::steady_clock;

pid_t OsdPid() {
  std::ifstream f(Env("GANTRY_CEPH_DIR") + "/run/osd.0.pid");
  pid_t pid = 0;
  f >> pid;
  return pid;
}

// Stops the OSD for its lifetime; resumes it on destruction, whatever the test did.
class StoppedOsd {
 public:
  explicit StoppedOsd(pid_t pid) : pid_(pid) { ok_ = pid_ > 0 && ::kill(pid_, SIGSTOP) == 0; }
  ~StoppedOsd() { Resume(); }
  void Resume() {
    if (ok_) ::kill(pid_, SIGCONT);
    ok_ = false;
  }
  bool ok() const { return ok_; }

 private:
  pid_t pid_;
  bool ok_ = false;
};

TEST(CephFaultsTest, WrongKeyIsAClearAuthErrorAtOpen) {
  GANTRY_SKIP_WITHOUT_CEPH();
  TempDir dir;
  FILE* p = ::popen("ceph-authtool --gen-print-key", "r");
  ASSERT_NE(p, nullptr);
  char key[128] = {0};
  ASSERT_NE(std::fgets(key, sizeof(key), p), nullptr);
  ::pclose(p);
  std::string keyring = dir.path() + "/wrong.keyring";
  std::ofstream(keyring) << "[client." << Env("GANTRY_CEPH_ID") << "]\n\tkey = " << key;
  std::string uri = "ceph://" + Env("GANTRY_CEPH_POOL") + "/x?conf=" + Env("CEPH_CONF") +
                    "&id=" + Env("GANTRY_CEPH_ID") + "&keyring=" + keyring + "&timeout_s=10";
  auto start = Clock::now();
  auto store = OpenObjectStore(uri);
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), StatusCode::kUnauthenticated) << store.status().ToString();
  EXPECT_NE(store.status().message().find("client." + Env("GANTRY_CEPH_ID")), std::string::npos);
  EXPECT_LT(Clock::now() - start, std::chrono::seconds(60)) << "open must not hang";
}

TEST(CephFaultsTest, MissingPoolIsAClearNotFoundAtOpen) {
  GANTRY_SKIP_WITHOUT_CEPH();
  std::string uri = "ceph://no-such-pool-gantry/x?conf=" + Env("CEPH_CONF") + "&id=" +
                    Env("GANTRY_CEPH_ID") + "&keyring=" + Env("GANTRY_CEPH_KEYRING");
  auto store = OpenObjectStore(uri);
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), StatusCode::kNotFound) << store.status().ToString();
  EXPECT_NE(store.status().message().find("no-such-pool-gantry"), std::string::npos);
}

TEST(CephFaultsTest, UnreadableConfIsAnInvalidArgument) {
  GANTRY_SKIP_WITHOUT_CEPH();
  auto store = OpenObjectStore("ceph://" + Env("GANTRY_CEPH_POOL") + "/x?conf=/nonexistent/ceph.conf");
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), StatusCode::kInvalidArgument) << store.status().ToString();
  EXPECT_NE(store.status().message().find("/nonexistent/ceph.conf"), std::string::npos);
}

TEST(CephFaultsTest, ReadFromAStoppedOsdFailsWithinItsTimeoutNamingPoolAndKey) {
  GANTRY_SKIP_WITHOUT_CEPH();
  auto store = OpenObjectStore(CephUri("faults/" + UniqueName("t"), "timeout_s=2&retries=1"));
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  ASSERT_TRUE((*store)->Put("obj", std::string(100000, 'x')).ok());
  std::string buf(100000, '\0');
  auto start = Clock::now();
  {
    StoppedOsd stopped(OsdPid());
    ASSERT_TRUE(stopped.ok()) << "cannot SIGSTOP the OSD (pid file in $GANTRY_CEPH_DIR/run)";
    auto n = (*store)->Get("obj", 0, std::as_writable_bytes(std::span<char>(buf)));
    ASSERT_FALSE(n.ok());
    EXPECT_EQ(n.status().code(), StatusCode::kDeadlineExceeded) << n.status().ToString();
    EXPECT_NE(n.status().message().find("obj"), std::string::npos);
    EXPECT_NE(n.status().message().find(Env("GANTRY_CEPH_POOL")), std::string::npos);
  }
  // 2 attempts x 2 s + backoff; the bound only catches a hang (op timeouts not applied).
  EXPECT_LT(Clock::now() - start, std::chrono::seconds(30));
  auto n = (*store)->Get("obj", 0, std::as_writable_bytes(std::span<char>(buf)));
  ASSERT_TRUE(n.ok()) << "after SIGCONT: " << n.status().ToString();
  EXPECT_EQ(buf, std::string(100000, 'x'));
}

TEST(CephFaultsTest, ReadSucceedsWhenTheOsdReturnsWithinTheRetries) {
  GANTRY_SKIP_WITHOUT_CEPH();
  auto store = OpenObjectStore(CephUri("faults/" + UniqueName("t"), "timeout_s=2&retries=6"));
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  ASSERT_TRUE((*store)->Put("obj", std::string(100000, 'y')).ok());
  std::string buf(100000, '\0');
  StoppedOsd stopped(OsdPid());
  ASSERT_TRUE(stopped.ok());
  auto read = (*store)->GetAsync("obj", 0, std::as_writable_bytes(std::span<char>(buf)));
  std::this_thread::sleep_for(std::chrono::milliseconds(2500));  // first attempt times out
  stopped.Resume();
  auto n = read->Wait();
  ASSERT_TRUE(n.ok()) << n.status().ToString();
  EXPECT_EQ(*n, 100000u);
  EXPECT_EQ(buf, std::string(100000, 'y'));
}

}  // namespace
}  // namespace gantry::storage::testing
