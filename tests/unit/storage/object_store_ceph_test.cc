// Runs the ObjectStore conformance suite on the Ceph backend (label ceph), plain and with
// small stripes, against the dev cluster of scripts/ceph-dev.sh; skips when its env is unset.
#include <gtest/gtest.h>

#include "storage/ceph/rados_object_store.h"
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

}  // namespace
}  // namespace gantry::storage::testing
