// The ObjectStore conformance suite (see object_store_conformance.h): behaviour every backend
// must share, so datasets and checkpoints work the same on a laptop and on Ceph.
#include "tests/unit/storage/object_store_conformance.h"

#include <atomic>
#include <thread>
#include <vector>

namespace gantry::storage::testing {
namespace {

std::string Pattern(size_t n, uint32_t seed) {
  std::string s(n, '\0');
  uint32_t x = seed * 2654435761u + 1;
  for (size_t i = 0; i < n; ++i) {
    x = x * 1664525u + 1013904223u;
    s[i] = static_cast<char>(x >> 24);
  }
  return s;
}

std::span<std::byte> Bytes(std::string& s) {
  return std::as_writable_bytes(std::span<char>(s.data(), s.size()));
}

}  // namespace

void ObjectStoreConformance::SetUp() {
  std::string reason;
  store_ = GetParam().make(&reason);
  if (!store_) GTEST_SKIP() << reason;
}

TEST_P(ObjectStoreConformance, PutThenGetAllReturnsTheSameBytes) {
  for (size_t size : {size_t{0}, size_t{1}, size_t{4096}, size_t{5} << 20}) {
    std::string key = "roundtrip/obj-" + std::to_string(size);
    std::string data = Pattern(size, static_cast<uint32_t>(size));
    ASSERT_TRUE(store_->Put(key, data).ok());
    auto got = store_->GetAll(key);
    ASSERT_TRUE(got.ok()) << got.status().ToString();
    EXPECT_EQ(got->size(), size);
    EXPECT_TRUE(*got == data) << "content differs for size " << size;
    auto sz = store_->Size(key);
    ASSERT_TRUE(sz.ok());
    EXPECT_EQ(*sz, size);
  }
}

TEST_P(ObjectStoreConformance, RangeReadsReturnTheRequestedSliceAndStopAtTheEnd) {
  std::string data = Pattern(100000, 7);
  ASSERT_TRUE(store_->Put("range", data).ok());
  std::string buf(1000, '\0');
  auto n = store_->Get("range", 12345, Bytes(buf));
  ASSERT_TRUE(n.ok()) << n.status().ToString();
  EXPECT_EQ(*n, 1000u);
  EXPECT_EQ(buf, data.substr(12345, 1000));
  n = store_->Get("range", 99500, Bytes(buf));  // crosses the end: short read
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 500u);
  EXPECT_EQ(buf.substr(0, 500), data.substr(99500));
  n = store_->Get("range", 200000, Bytes(buf));  // past the end: nothing
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 0u);
}

TEST_P(ObjectStoreConformance, PutReplacesTheWholeObject) {
  ASSERT_TRUE(store_->Put("replace", Pattern(50000, 1)).ok());
  ASSERT_TRUE(store_->Put("replace", std::string("short")).ok());
  auto got = store_->GetAll("replace");
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(*got, "short");
}

TEST_P(ObjectStoreConformance, MissingKeysAreNotFoundAndNamed) {
  std::string buf(10, '\0');
  auto n = store_->Get("missing/key", 0, Bytes(buf));
  ASSERT_FALSE(n.ok());
  EXPECT_EQ(n.status().code(), StatusCode::kNotFound);
  EXPECT_NE(n.status().message().find("missing/key"), std::string::npos) << n.status().message();
  EXPECT_EQ(store_->Size("missing/key").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(store_->Remove("missing/key").code(), StatusCode::kNotFound);
  auto exists = store_->Exists("missing/key");
  ASSERT_TRUE(exists.ok());
  EXPECT_FALSE(*exists);
}

TEST_P(ObjectStoreConformance, InvalidKeysAreRejected) {
  for (const char* key : {"", "/abs", "a//b", "a/../b", "./a", "a/", ".gantry-tmp.x"}) {
    Status st = store_->Put(key, std::string("x"));
    EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << "key '" << key << "': " << st.ToString();
  }
}

TEST_P(ObjectStoreConformance, ListReturnsSortedKeysWithThePrefix) {
  for (const char* key : {"ds/b/2", "ds/a", "ds/b/1", "dsx", "other/a"}) {
    ASSERT_TRUE(store_->Put(key, std::string(key)).ok());
  }
  auto keys = store_->List("ds/");
  ASSERT_TRUE(keys.ok()) << keys.status().ToString();
  EXPECT_EQ(*keys, (std::vector<std::string>{"ds/a", "ds/b/1", "ds/b/2"}));
  keys = store_->List("ds");
  ASSERT_TRUE(keys.ok());
  EXPECT_EQ(keys->size(), 4u);
  keys = store_->List("nothing/");
  ASSERT_TRUE(keys.ok());
  EXPECT_TRUE(keys->empty());
}

TEST_P(ObjectStoreConformance, RemoveDeletesOnlyThatKey) {
  ASSERT_TRUE(store_->Put("rm/a", std::string("a")).ok());
  ASSERT_TRUE(store_->Put("rm/b", std::string("b")).ok());
  ASSERT_TRUE(store_->Remove("rm/a").ok());
  EXPECT_EQ(store_->Size("rm/a").status().code(), StatusCode::kNotFound);
  auto keys = store_->List("rm/");
  ASSERT_TRUE(keys.ok());
  EXPECT_EQ(*keys, std::vector<std::string>{"rm/b"});
}

TEST_P(ObjectStoreConformance, CompareAndPutSucceedsOnlyOnTheExpectedContent) {
  EXPECT_TRUE(store_->CompareAndPut("ptr", std::nullopt, std::string("v1")).ok());
  EXPECT_EQ(store_->CompareAndPut("ptr", std::nullopt, std::string("v2")).code(),
            StatusCode::kAborted);
  EXPECT_EQ(store_->CompareAndPut("ptr", std::string_view("v0"), std::string("v2")).code(),
            StatusCode::kAborted);
  EXPECT_TRUE(store_->CompareAndPut("ptr", std::string_view("v1"), std::string("v2")).ok());
  auto got = store_->GetAll("ptr");
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(*got, "v2");
}

TEST_P(ObjectStoreConformance, ConcurrentCompareAndPutLosesNoIncrement) {
  constexpr int kThreads = 4, kIncrements = 10;
  ASSERT_TRUE(store_->Put("counter", std::string("0")).ok());
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < kIncrements;) {
        auto cur = store_->GetAll("counter");
        if (!cur.ok()) { ++failures; return; }
        std::string next = std::to_string(std::stoi(*cur) + 1);
        Status st = store_->CompareAndPut("counter", std::string_view(*cur), next);
        if (st.ok()) ++i;
        else if (st.code() != StatusCode::kAborted) { ++failures; return; }
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
  auto got = store_->GetAll("counter");
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(*got, std::to_string(kThreads * kIncrements));
}

TEST_P(ObjectStoreConformance, ManyAsyncReadsInFlightAllComplete) {
  constexpr int kObjects = 24;
  constexpr size_t kSize = 256 << 10;
  for (int i = 0; i < kObjects; ++i) {
    ASSERT_TRUE(store_->Put("async/" + std::to_string(i), Pattern(kSize, i)).ok());
  }
  std::vector<std::string> bufs(kObjects, std::string(kSize, '\0'));
  std::vector<std::unique_ptr<PendingRead>> reads;
  for (int i = 0; i < kObjects; ++i) {
    reads.push_back(store_->GetAsync("async/" + std::to_string(i), 0, Bytes(bufs[i])));
  }
  for (int i = kObjects - 1; i >= 0; --i) {  // wait out of order on purpose
    auto n = reads[i]->Wait();
    ASSERT_TRUE(n.ok()) << n.status().ToString();
    EXPECT_EQ(*n, kSize);
    EXPECT_TRUE(bufs[i] == Pattern(kSize, i)) << "object " << i;
  }
}

TEST_P(ObjectStoreConformance, ReadersNeverSeeAHalfWrittenObject) {
  const std::string a = std::string(300000, 'a'), b = std::string(200000, 'b');
  ASSERT_TRUE(store_->Put("atomic", a).ok());
  std::atomic<bool> stop{false};
  std::atomic<int> torn{0}, reads{0}, errors{0};
  std::thread reader([&] {
    while (!stop) {
      auto got = store_->GetAll("atomic");
      if (!got.ok()) {  // size changed between stat and read: DataLoss, retried
        ++errors;
        continue;
      }
      ++reads;
      if (*got != a && *got != b) ++torn;
    }
  });
  // Keep overwriting until the reader has checked enough whole reads (or 2000 writes).
  bool put_ok = true;
  for (int i = 0; put_ok && (i < 20 || (reads < 50 && i < 2000)); ++i) {
    put_ok = store_->Put("atomic", i % 2 ? a : b).ok();
  }
  stop = true;
  reader.join();
  EXPECT_TRUE(put_ok);
  EXPECT_GE(reads.load(), 50) << "the reader checked too few whole objects (" << errors.load()
                              << " failed reads)";
  EXPECT_EQ(torn.load(), 0) << "of " << reads.load() << " reads";
}

}  // namespace gantry::storage::testing
