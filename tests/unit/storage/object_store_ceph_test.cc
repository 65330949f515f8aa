// Runs the ObjectStore conformance suite on the Ceph backend (label ceph), plain and with
// small stripes, against the dev cluster of scripts/ceph-dev.sh; skips when its env is unset.
#include <gtest/gtest.h>

#include <set>

#include "storage/ceph/rados_object_store.h"
#include "storage/dataset.h"
#include "storage/loader.h"
#include "tests/unit/storage/object_store_conformance.h"
#include "tests/unit/storage/store_test_env.h"

namespace gantry::storage::testing {
namespace {

std::unique_ptr<ObjectStore> MakeCeph(const std::string& extra, std::string* reason) {
  if (!HaveCeph()) {
    *reason = "no dev Ceph: run `eval $(scripts/ceph-dev.sh start DIR)` first";
    return nullptr;
  }
  auto store = OpenObjectStore(CephUri("conformance/" + UniqueName("t"), extra));
  if (!store.ok()) {
    ADD_FAILURE() << store.status().ToString();
    *reason = "open failed";
    return nullptr;
  }
  return std::move(store).value();
}

INSTANTIATE_TEST_SUITE_P(
    Ceph, ObjectStoreConformance,
    ::testing::Values(
        StoreFactory{"ceph", [](std::string* r) { return MakeCeph("", r); }},
        // 1 MiB stripes: the 5 MiB objects are striped, the 300 KB atomicity ones are not.
        StoreFactory{"ceph_striped",
                     [](std::string* r) { return MakeCeph("stripe_bytes=1048576&inflight=4", r); }}),
    [](const auto& info) { return info.param.name; });

class CephStripingTest : public ::testing::Test {
 protected:
  void SetUp() override {
    GANTRY_SKIP_WITHOUT_CEPH();
    auto s = OpenObjectStore(CephUri("striping/" + UniqueName("t"), "stripe_bytes=65536"));
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    store_ = std::move(s).value();
  }
  std::unique_ptr<ObjectStore> store_;
};

TEST_F(CephStripingTest, RangesAcrossStripeBoundariesAndShrinkingOverwrites) {
  std::string big(65536 * 5 + 123, '\0');
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>(i * 31 + (i >> 16));
  ASSERT_TRUE(store_->Put("big", big).ok());
  std::string buf(70000, '\0');
  auto n = store_->Get("big", 60000, std::as_writable_bytes(std::span<char>(buf)));
  ASSERT_TRUE(n.ok()) << n.status().ToString();
  EXPECT_EQ(*n, 70000u);
  EXPECT_TRUE(buf == big.substr(60000, 70000));
  n = store_->Get("big", 65536 * 5, std::as_writable_bytes(std::span<char>(buf)));
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 123u);  // the short last stripe
  // Shrinking to one stripe removes the old stripes: only "big" is listed, size is new.
  ASSERT_TRUE(store_->Put("big", std::string("tiny")).ok());
  auto keys = store_->List("");
  ASSERT_TRUE(keys.ok());
  EXPECT_EQ(*keys, std::vector<std::string>{"big"});
  auto all = store_->GetAll("big");
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(*all, "tiny");
  ASSERT_TRUE(store_->Put("big", big).ok());
  ASSERT_TRUE(store_->Remove("big").ok());
  keys = store_->List("");
  ASSERT_TRUE(keys.ok());
  EXPECT_TRUE(keys->empty()) << "stripes left behind after Remove";
}

// A layout xattr that cannot be right (damaged, or written by something else) is DataLoss
// naming the object on every read path; it used to divide by a zero stripe or size a read
// from it. The object can still be removed, stripes included.
TEST_F(CephStripingTest, DamagedLayoutXattrIsDataLossAndTheObjectCanBeRemoved) {
  auto* rados = dynamic_cast<RadosObjectStore*>(store_.get());
  ASSERT_NE(rados, nullptr);
  const std::string big(65536 * 3 + 5, 'x');
  std::string buf(200000, '\0');
  for (const char* bad : {"v1 196613 0 4", "v1 196613 65536 2", "v1 10 65536 4",
                          "v1 196613 65536 0", "v1 99999999999999 65536 4", "garbage",
                          "v1 196613 65536 4 trailing"}) {
    SCOPED_TRACE(bad);
    ASSERT_TRUE(store_->Put("obj", big).ok());
    ceph::bufferlist bl;
    bl.append(bad);
    ASSERT_EQ(rados->io().setxattr(rados->Oid("obj"), "gantry.layout", bl), 0);
    auto n = store_->Get("obj", 0, std::as_writable_bytes(std::span<char>(buf)));
    EXPECT_EQ(n.status().code(), StatusCode::kDataLoss) << n.status().ToString();
    EXPECT_NE(n.status().message().find("obj"), std::string::npos) << n.status().ToString();
    EXPECT_EQ(store_->GetAll("obj").status().code(), StatusCode::kDataLoss);
    EXPECT_EQ(store_->Size("obj").status().code(), StatusCode::kDataLoss);
    // "Put it again" works: the damaged object is replaced, stale stripes included.
    ASSERT_TRUE(store_->Put("obj", std::string("small")).ok());
    auto again = store_->GetAll("obj");
    ASSERT_TRUE(again.ok()) << again.status().ToString();
    EXPECT_EQ(*again, "small");
    auto listed = store_->List("");
    ASSERT_TRUE(listed.ok());
    EXPECT_EQ(*listed, std::vector<std::string>{"obj"}) << "stale stripes after the put";
    ASSERT_TRUE(store_->Remove("obj").ok());
    auto keys = store_->List("");
    ASSERT_TRUE(keys.ok());
    EXPECT_TRUE(keys->empty()) << "stripes left behind";
  }
}

}  // namespace
}  // namespace gantry::storage::testing

namespace gantry::storage::testing {
namespace {

// A dataset on Ceph read by two ranks: every record once per epoch, and a corrupt shard is
// reported with its key.
TEST(CephDatasetTest, TwoRanksReadEveryRecordOnceAndCorruptionNamesTheShard) {
  GANTRY_SKIP_WITHOUT_CEPH();
  const std::string uri = CephUri("datasets/" + UniqueName("t"));
  auto store = OpenObjectStore(uri);
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  RecordLayout layout{.kind = RecordKind::kTokens, .dtype = DType::kU32, .window = 2};
  auto w = DatasetWriter::Create(store->get(), layout, {.shard_bytes = 4096, .chunk_bytes = 512});
  ASSERT_TRUE(w.ok());
  for (uint32_t i = 0; i < 2000; ++i) {
    uint32_t rec[2] = {i, i};
    ASSERT_TRUE((*w)->Append(std::as_bytes(std::span<uint32_t>(rec))).ok());
  }
  ASSERT_TRUE((*w)->Finish().ok());
  std::set<uint32_t> seen;
  uint64_t batches = 0;
  for (int rank = 0; rank < 2; ++rank) {
    auto loader = DatasetLoader::Open(uri, {.seed = 2, .rank = rank, .world = 2, .batch = 10});
    ASSERT_TRUE(loader.ok()) << loader.status().ToString();
    std::vector<uint32_t> batch(20);
    batches = (*loader)->BatchesInEpoch(0);
    for (uint64_t b = 0; b < (*loader)->BatchesInEpoch(0); ++b) {
      ASSERT_TRUE((*loader)->Next(std::as_writable_bytes(std::span<uint32_t>(batch))).ok());
      for (int r = 0; r < 10; ++r) EXPECT_TRUE(seen.insert(batch[2 * r]).second);
    }
  }
  // 32 chunks of 64 records (the last one 16): 16 chunks per rank, the shorter rank sets the
  // batch count (97), the rest of the epoch is dropped on both.
  EXPECT_EQ(batches, 97u);
  EXPECT_EQ(seen.size(), 2 * 10 * batches);
  auto shard = (*store)->GetAll("shard-00001.bin");
  ASSERT_TRUE(shard.ok());
  (*shard)[7] ^= 1;
  ASSERT_TRUE((*store)->Put("shard-00001.bin", *shard).ok());
  auto loader = DatasetLoader::Open(uri, {.seed = 2, .batch = 10});
  ASSERT_TRUE(loader.ok());
  std::vector<std::byte> buf((*loader)->batch_bytes());
  Status st;
  for (int i = 0; i < 200 && st.ok(); ++i) st = (*loader)->Next(buf);
  EXPECT_EQ(st.code(), StatusCode::kDataLoss);
  EXPECT_NE(st.message().find("shard-00001.bin"), std::string::npos) << st.message();
}

}  // namespace
}  // namespace gantry::storage::testing
