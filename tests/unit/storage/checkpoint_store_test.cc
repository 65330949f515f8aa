// CheckpointStore on one backend (local, or Ceph when built with GANTRY_TEST_CEPH): round
// trip, keep-last-N, broken checkpoints skipped, and a writer process killed in the middle of
// a save leaves the previous checkpoint loadable.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "storage/checkpoint_store.h"
#include "tests/unit/storage/store_test_env.h"

namespace gantry::storage::testing {
namespace {

std::vector<std::byte> Data(size_t n, int seed) {
  std::vector<std::byte> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<std::byte>((i * 7 + seed * 13) & 0xff);
  return v;
}

// Forwards to a real store; on the Put of `pause_key` tells the parent (pipe) and stops.
class PausingStore final : public ObjectStore {
 public:
  PausingStore(std::unique_ptr<ObjectStore> inner, std::string pause_key, int fd)
      : inner_(std::move(inner)), pause_key_(std::move(pause_key)), fd_(fd) {}
  std::string Describe() const override { return inner_->Describe(); }
  std::unique_ptr<PendingRead> GetAsync(std::string_view k, uint64_t o, std::span<std::byte> d) override {
    return inner_->GetAsync(k, o, d);
  }
  StatusOr<uint64_t> Size(std::string_view k) override { return inner_->Size(k); }
  Status Put(std::string_view k, std::span<const std::byte> d) override {
    if (k.ends_with(pause_key_)) {
      char c = 'p';
      (void)!::write(fd_, &c, 1);
      for (;;) ::pause();  // killed here, in the middle of Save
    }
    return inner_->Put(k, d);
  }
  StatusOr<std::vector<std::string>> List(std::string_view p) override { return inner_->List(p); }
  Status Remove(std::string_view k) override { return inner_->Remove(k); }
  Status CompareAndPut(std::string_view k, std::optional<std::string_view> e,
                       std::span<const std::byte> d) override {
    return inner_->CompareAndPut(k, e, d);
  }

 private:
  std::unique_ptr<ObjectStore> inner_;
  std::string pause_key_;
  int fd_;
};

// Distinct suite names per backend: ctest test names must not collide across executables.
#ifdef GANTRY_TEST_CEPH
#define CheckpointStoreTest CephCheckpointStoreTest
#endif

class CheckpointStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
#ifdef GANTRY_TEST_CEPH
    GANTRY_SKIP_WITHOUT_CEPH();
    uri_ = CephUri("ckpt/" + UniqueName("t"));
#else
    uri_ = "file://" + dir_.path() + "/ckpt";
#endif
  }
  std::unique_ptr<CheckpointStore> Open(int keep_last = 3) {
    auto s = CheckpointStore::Open(uri_, {.keep_last = keep_last});
    EXPECT_TRUE(s.ok()) << s.status().ToString();
    return s.ok() ? std::move(s).value() : nullptr;
  }
  Status SaveStep(CheckpointStore& s, int64_t step) {
    auto params = Data(100000 + step, static_cast<int>(step));
    auto opt = Data(5000, static_cast<int>(step) + 1);
    return s.Save(step, {{"params", params}, {"optim", opt}}, "{\"step\":" + std::to_string(step) + "}");
  }
  TempDir dir_;
  std::string uri_;
};

TEST_F(CheckpointStoreTest, SaveThenLoadLatestReturnsTheSameBytes) {
  auto s = Open();
  auto empty = s->LoadLatest();
  EXPECT_EQ(empty.status().code(), StatusCode::kNotFound);
  ASSERT_TRUE(SaveStep(*s, 10).ok());
  ASSERT_TRUE(SaveStep(*s, 20).ok());
  auto c = s->LoadLatest();
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->step, 20);
  EXPECT_EQ(c->metadata, "{\"step\":20}");
  EXPECT_EQ(c->blobs.at("params"), Data(100020, 20));
  EXPECT_EQ(c->blobs.at("optim"), Data(5000, 21));
  auto latest = s->LatestStep();
  ASSERT_TRUE(latest.ok());
  EXPECT_EQ(latest->value(), 20);
}

TEST_F(CheckpointStoreTest, KeepsOnlyTheLastNCommitted) {
  auto s = Open(2);
  for (int64_t step : {1, 2, 3, 4, 5}) ASSERT_TRUE(SaveStep(*s, step).ok());
  auto steps = s->ListCommitted();
  ASSERT_TRUE(steps.ok());
  EXPECT_EQ(*steps, (std::vector<int64_t>{4, 5}));
  auto keys = s->store().List("step-000000000001");
  ASSERT_TRUE(keys.ok());
  EXPECT_TRUE(keys->empty()) << "blobs of a pruned checkpoint were left behind";
}

TEST_F(CheckpointStoreTest, CorruptOrIncompleteCheckpointsAreSkippedForThePreviousOne) {
  auto s = Open(5);
  for (int64_t step : {1, 2, 3}) ASSERT_TRUE(SaveStep(*s, step).ok());
  // Step 3: flip a byte of a blob -> DataLoss, fall back to 2.
  auto blob = s->store().GetAll("step-000000000003/blob-params");
  ASSERT_TRUE(blob.ok());
  (*blob)[500] ^= 1;
  ASSERT_TRUE(s->store().Put("step-000000000003/blob-params", *blob).ok());
  EXPECT_EQ(s->Load(3).status().code(), StatusCode::kDataLoss);
  auto c = s->LoadLatest();
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->step, 2);
  // Step 2 loses its manifest -> 1.
  ASSERT_TRUE(s->store().Remove("step-000000000002/manifest.json").ok());
  c = s->LoadLatest();
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->step, 1);
  EXPECT_EQ(c->blobs.at("params"), Data(100001, 1));
}

TEST_F(CheckpointStoreTest, BadNamesAndStepsAreRejected) {
  auto s = Open();
  auto d = Data(10, 1);
  EXPECT_EQ(s->Save(1, {{"a/b", d}}, "").code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(s->Save(1, {{"a", d}, {"a", d}}, "").code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(s->Save(-1, {{"a", d}}, "").code(), StatusCode::kInvalidArgument);
}

TEST_F(CheckpointStoreTest, WriterKilledMidwayLeavesThePreviousCheckpointLoadable) {
  {
    auto s = Open();
    ASSERT_TRUE(SaveStep(*s, 100).ok());
  }  // no store open across fork()
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {  // the writer: step 200 with 4 blobs; stops while writing the third
    ::close(fds[0]);
    auto inner = OpenObjectStore(uri_);
    if (!inner.ok()) ::_exit(3);
    auto store = std::make_shared<PausingStore>(std::move(inner).value(), "blob-b2", fds[1]);
    CheckpointStore writer(store, {});
    auto d = Data(300000, 2);
    (void)writer.Save(200, {{"b0", d}, {"b1", d}, {"b2", d}, {"b3", d}}, "{}");
    ::_exit(4);  // not reached
  }
  ::close(fds[1]);
  char c = 0;
  ASSERT_EQ(::read(fds[0], &c, 1), 1) << "writer died before reaching the pause point";
  ::close(fds[0]);
  ASSERT_EQ(::kill(child, SIGKILL), 0);  // by PID, mid-save
  int wstatus = 0;
  ASSERT_EQ(::waitpid(child, &wstatus, 0), child);
  EXPECT_TRUE(WIFSIGNALED(wstatus));

  auto s = Open();
  auto leftovers = s->store().List("step-000000000200/");
  ASSERT_TRUE(leftovers.ok());
  EXPECT_EQ(leftovers->size(), 2u) << "the writer should have stored b0 and b1 before dying";
  auto latest = s->LatestStep();
  ASSERT_TRUE(latest.ok());
  EXPECT_EQ(latest->value(), 100);
  auto ckpt = s->LoadLatest();
  ASSERT_TRUE(ckpt.ok()) << ckpt.status().ToString();
  EXPECT_EQ(ckpt->step, 100);
  EXPECT_EQ(ckpt->blobs.at("params"), Data(100100, 100));
  // The next successful save commits and clears the debris of the dead writer.
  ASSERT_TRUE(SaveStep(*s, 300).ok());
  leftovers = s->store().List("step-000000000200/");
  ASSERT_TRUE(leftovers.ok());
  EXPECT_TRUE(leftovers->empty());
}

}  // namespace
}  // namespace gantry::storage::testing
