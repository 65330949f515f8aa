// Runs the ObjectStore conformance suite on the local backend, plus local-only checks.
#include <gtest/gtest.h>

#include <filesystem>

#include "storage/local/local_object_store.h"
#include "tests/unit/storage/object_store_conformance.h"
#include "tests/unit/storage/store_test_env.h"

namespace gantry::storage::testing {
namespace {

std::unique_ptr<ObjectStore> MakeLocal(std::string* reason) {
  static std::vector<std::unique_ptr<TempDir>> dirs;  // live until the process ends
  dirs.push_back(std::make_unique<TempDir>());
  auto store = OpenObjectStore("file://" + dirs.back()->path());
  if (!store.ok()) {
    // The local store needs nothing from the environment: not opening is a failure, not a skip.
    ADD_FAILURE() << store.status().ToString();
    *reason = store.status().ToString();
    return nullptr;
  }
  return std::move(store).value();
}

INSTANTIATE_TEST_SUITE_P(Local, ObjectStoreConformance,
                         ::testing::Values(StoreFactory{"local", MakeLocal}),
                         [](const auto& info) { return info.param.name; });

TEST(StoreUriTest, ParsesFileAndPlainPaths) {
  auto u = ParseStoreUri("file:///data/x/");
  ASSERT_TRUE(u.ok());
  EXPECT_EQ(u->scheme, "file");
  EXPECT_EQ(u->path, "/data/x");
  u = ParseStoreUri("/abs/dir");
  ASSERT_TRUE(u.ok());
  EXPECT_EQ(u->path, "/abs/dir");
  u = ParseStoreUri("rel/dir");
  ASSERT_TRUE(u.ok());
  EXPECT_EQ(u->path, (std::filesystem::current_path() / "rel/dir").string());
  u = ParseStoreUri("file://.gantry/ckpt");
  ASSERT_TRUE(u.ok());
  EXPECT_EQ(u->path, (std::filesystem::current_path() / ".gantry/ckpt").string());
}

TEST(StoreUriTest, ParsesCephPoolPrefixAndOptions) {
  auto u = ParseStoreUri("ceph://gantry/datasets/fortunes/?conf=/etc/c%2Bc.conf&id=client.x&keyring=/k");
  ASSERT_TRUE(u.ok()) << u.status().ToString();
  EXPECT_EQ(u->scheme, "ceph");
  EXPECT_EQ(u->pool, "gantry");
  EXPECT_EQ(u->prefix, "datasets/fortunes/");
  EXPECT_EQ(u->params.at("conf"), "/etc/c+c.conf");
  EXPECT_EQ(u->params.at("id"), "client.x");
  EXPECT_EQ(u->params.at("keyring"), "/k");
  EXPECT_EQ(u->ToString(), "ceph://gantry/datasets/fortunes");
  u = ParseStoreUri("ceph://pool");
  ASSERT_TRUE(u.ok());
  EXPECT_EQ(u->prefix, "");
}

TEST(StoreUriTest, RejectsBadUrisWithAClearMessage) {
  for (const char* bad : {"", "s3://bucket/x", "ceph://", "ceph:///prefix", "ceph://p/x?color=red",
                          "ceph://p/a/../b", "ceph://p/x?conf=%zz"}) {
    auto u = ParseStoreUri(bad);
    EXPECT_FALSE(u.ok()) << bad;
    EXPECT_EQ(u.status().code(), StatusCode::kInvalidArgument) << bad;
  }
  auto u = ParseStoreUri("s3://bucket/x");
  EXPECT_NE(u.status().message().find("s3"), std::string::npos);
}

TEST(LocalObjectStoreTest, LeavesNoTempFilesAndListsNoLockFiles) {
  TempDir dir;
  auto store = LocalObjectStore::Open(dir.path());
  ASSERT_TRUE(store.ok());
  ASSERT_TRUE((*store)->Put("a/b", std::string("x")).ok());
  ASSERT_TRUE((*store)->CompareAndPut("a/p", std::nullopt, std::string("y")).ok());
  int files = 0;
  for (auto& e : std::filesystem::recursive_directory_iterator(dir.path())) {
    if (e.is_regular_file()) {
      ++files;
      EXPECT_EQ(e.path().filename().string().find(".gantry-tmp"), std::string::npos);
    }
  }
  EXPECT_EQ(files, 3);  // a/b, a/p and the lock file of a/p
  auto keys = (*store)->List("");
  ASSERT_TRUE(keys.ok());
  EXPECT_EQ(*keys, (std::vector<std::string>{"a/b", "a/p"}));
}

TEST(LocalObjectStoreTest, RelativeRootIsRejected) {
  auto store = LocalObjectStore::Open("relative/dir");
  EXPECT_EQ(store.status().code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace gantry::storage::testing
