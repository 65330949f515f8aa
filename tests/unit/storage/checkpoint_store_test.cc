// CheckpointStore on one backend (local, or Ceph when built with GANTRY_TEST_CEPH): layout and
// round trip, keep-last-N, broken checkpoints skipped (store CRCs and caller checks), and a
// writer process killed in the middle of a save leaves the previous checkpoint loadable.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "storage/checkpoint_store.h"

#include <functional>
#include <mutex>

#include "base/logging.h"
#include "tests/unit/storage/store_test_env.h"

namespace gantry::storage::testing {
namespace {

std::vector<std::byte> Data(size_t n, int seed) {
  std::vector<std::byte> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<std::byte>((i * 7 + seed * 13) & 0xff);
  return v;
}

std::string Str(const std::vector<std::byte>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size());
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

// Forwards to a real store; a read of a key containing `fail_reads` fails with Unavailable (the
// store is unreachable, not the data bad), and `before_cas` runs before each CompareAndPut.
class FaultyStore final : public ObjectStore {
 public:
  explicit FaultyStore(std::unique_ptr<ObjectStore> inner) : inner_(std::move(inner)) {}
  std::string Describe() const override { return inner_->Describe(); }
  std::unique_ptr<PendingRead> GetAsync(std::string_view k, uint64_t o, std::span<std::byte> d) override {
    if (!fail_reads.empty() && k.find(fail_reads) != std::string_view::npos) {
      return std::make_unique<DoneRead>(UnavailableError("injected: store unreachable reading " +
                                                         std::string(k)));
    }
    return inner_->GetAsync(k, o, d);
  }
  StatusOr<uint64_t> Size(std::string_view k) override { return inner_->Size(k); }
  Status Put(std::string_view k, std::span<const std::byte> d) override { return inner_->Put(k, d); }
  StatusOr<std::vector<std::string>> List(std::string_view p) override { return inner_->List(p); }
  Status Remove(std::string_view k) override { return inner_->Remove(k); }
  Status CompareAndPut(std::string_view k, std::optional<std::string_view> e,
                       std::span<const std::byte> d) override {
    if (before_cas) before_cas(*inner_);
    return inner_->CompareAndPut(k, e, d);
  }
  std::string fail_reads;
  std::function<void(ObjectStore&)> before_cas;

 private:
  std::unique_ptr<ObjectStore> inner_;
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
  EXPECT_EQ(c->blobs.at("params"), Str(Data(100020, 20)));
  EXPECT_EQ(c->blobs.at("optim"), Str(Data(5000, 21)));
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
  auto keys = s->store().List("ckpt-000001/");
  ASSERT_TRUE(keys.ok());
  EXPECT_TRUE(keys->empty()) << "blobs of a pruned checkpoint were left behind";
}

TEST_F(CheckpointStoreTest, CorruptOrIncompleteCheckpointsAreSkippedForThePreviousOne) {
  auto s = Open(5);
  for (int64_t step : {1, 2, 3}) ASSERT_TRUE(SaveStep(*s, step).ok());
  // Step 3: flip a byte of a blob -> DataLoss, fall back to 2.
  auto blob = s->store().GetAll("ckpt-000003/params");
  ASSERT_TRUE(blob.ok());
  (*blob)[500] ^= 1;
  ASSERT_TRUE(s->store().Put("ckpt-000003/params", *blob).ok());
  EXPECT_EQ(s->Load(3).status().code(), StatusCode::kDataLoss);
  auto c = s->LoadLatest();
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->step, 2);
  // Step 2 loses its manifest -> 1.
  ASSERT_TRUE(s->store().Remove("ckpt-000002/manifest.json").ok());
  c = s->LoadLatest();
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->step, 1);
  EXPECT_EQ(c->blobs.at("params"), Str(Data(100001, 1)));
}

// An unreachable store is not a damaged checkpoint: LoadLatest returns the error instead of
// falling back to an older checkpoint (which would silently rewind training).
TEST_F(CheckpointStoreTest, StoreErrorsComeBackInsteadOfFallingBack) {
  auto s = Open(5);
  for (int64_t step : {1, 2, 3}) ASSERT_TRUE(SaveStep(*s, step).ok());
  auto inner = OpenObjectStore(uri_);
  ASSERT_TRUE(inner.ok()) << inner.status().ToString();
  auto faulty = std::make_shared<FaultyStore>(std::move(inner).value());
  faulty->fail_reads = "ckpt-000003/params";
  CheckpointStore cs(faulty, {.keep_last = 5});
  auto c = cs.LoadLatest();
  ASSERT_FALSE(c.ok()) << "fell back to step " << c->step;
  EXPECT_EQ(c.status().code(), StatusCode::kUnavailable) << c.status().ToString();
  faulty->fail_reads.clear();
  c = cs.LoadLatest();
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->step, 3);
}

// A checkpoint directory newer than `latest` was never committed (or was refused and `latest`
// moved back past it): LoadLatest ignores it even though it is complete.
TEST_F(CheckpointStoreTest, CheckpointsNewerThanLatestAreIgnored) {
  auto s = Open(5);
  for (int64_t step : {1, 2, 3}) ASSERT_TRUE(SaveStep(*s, step).ok());
  ASSERT_TRUE(s->store().Put(kCheckpointLatestKey, std::string("ckpt-000002\n")).ok());
  auto c = s->LoadLatest();
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->step, 2);
  auto latest = s->LatestStep();
  ASSERT_TRUE(latest.ok());
  EXPECT_EQ(*latest, std::optional<int64_t>(2));
}

// Another writer moving `latest` while this one commits: Aborted, and `latest` keeps the
// other writer's value (this commit does not overwrite it).
TEST_F(CheckpointStoreTest, AWriterThatFindsLatestMovedIsAborted) {
  auto s = Open(5);
  ASSERT_TRUE(SaveStep(*s, 1).ok());
  ASSERT_TRUE(SaveStep(*s, 2).ok());
  auto inner = OpenObjectStore(uri_);
  ASSERT_TRUE(inner.ok()) << inner.status().ToString();
  auto faulty = std::make_shared<FaultyStore>(std::move(inner).value());
  faulty->before_cas = [](ObjectStore& st) {
    ASSERT_TRUE(st.Put(kCheckpointLatestKey, std::string("ckpt-000001\n")).ok());
  };
  CheckpointStore cs(faulty, {.keep_last = 5});
  Status st = SaveStep(cs, 3);
  EXPECT_EQ(st.code(), StatusCode::kAborted) << st.ToString();
  auto latest = s->LatestStep();
  ASSERT_TRUE(latest.ok());
  EXPECT_EQ(*latest, std::optional<int64_t>(1));
}

// keep_last counts checkpoints up to the one just committed. After a resume refused a corrupt
// newest checkpoint (300) and fell back to 200, the next commit (250) keeps 200 as its
// predecessor; the refused 300 is left as it is, neither counted nor deleted.
TEST_F(CheckpointStoreTest, PruningAfterAFallbackKeepsTheValidPredecessor) {
  auto s = Open(2);
  for (int64_t step : {100, 200, 300}) ASSERT_TRUE(SaveStep(*s, step).ok());
  auto blob = s->store().GetAll("ckpt-000300/params");
  ASSERT_TRUE(blob.ok());
  (*blob)[7] ^= 1;
  ASSERT_TRUE(s->store().Put("ckpt-000300/params", *blob).ok());
  auto c = s->LoadLatest();
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  ASSERT_EQ(c->step, 200);
  ASSERT_TRUE(SaveStep(*s, 250).ok());
  auto steps = s->ListCommitted();
  ASSERT_TRUE(steps.ok());
  EXPECT_EQ(*steps, (std::vector<int64_t>{200, 250, 300}));
  ASSERT_TRUE(s->store().Remove("ckpt-000250/manifest.json").ok());  // 250 lost: 200 remains
  c = s->LoadLatest();
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->step, 200);
}

TEST_F(CheckpointStoreTest, BadNamesAndStepsAreRejected) {
  auto s = Open();
  auto d = Data(10, 1);
  EXPECT_EQ(s->Save(1, {{"a/b", d}}, "").code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(s->Save(1, {{"a", d}, {"a", d}}, "").code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(s->Save(-1, {{"a", d}}, "").code(), StatusCode::kInvalidArgument);
}

TEST_F(CheckpointStoreTest, DirNamesCarryTheStepInCanonicalForm) {
  EXPECT_EQ(CheckpointStore::DirName(200), "ckpt-000200");
  EXPECT_EQ(CheckpointStore::DirName(1234567), "ckpt-1234567");
  EXPECT_EQ(CheckpointStore::StepOf("ckpt-000200"), 200);
  EXPECT_EQ(CheckpointStore::StepOf("ckpt-1234567"), 1234567);
  EXPECT_EQ(CheckpointStore::StepOf("ckpt-0000200"), std::nullopt);  // not step 200's name
  EXPECT_EQ(CheckpointStore::StepOf("ckpt-12x"), std::nullopt);
  EXPECT_EQ(CheckpointStore::StepOf("ckpt-"), std::nullopt);
  EXPECT_EQ(CheckpointStore::StepOf("latest"), std::nullopt);
}

TEST_F(CheckpointStoreTest, LayoutIsCkptDirsWithManifestAndLatest) {
  auto s = Open();
  ASSERT_TRUE(SaveStep(*s, 7).ok());
  auto keys = s->store().List("");
  ASSERT_TRUE(keys.ok());
  EXPECT_EQ(*keys, (std::vector<std::string>{"ckpt-000007/manifest.json", "ckpt-000007/optim",
                                             "ckpt-000007/params", "latest"}));
  EXPECT_EQ(*s->store().GetAll("latest"), "ckpt-000007\n");
  auto manifest = s->store().GetAll("ckpt-000007/manifest.json");
  ASSERT_TRUE(manifest.ok());
  EXPECT_NE(manifest->find("\"crc32c\""), std::string::npos) << *manifest;
  // Metadata is a JSON document kept in the manifest; anything else is refused.
  EXPECT_EQ(s->Save(8, {}, "not json").code(), StatusCode::kInvalidArgument);
  auto d = Data(10, 1);
  EXPECT_EQ(s->Save(8, {{"manifest.json", d}}, "").code(), StatusCode::kInvalidArgument);
  ASSERT_TRUE(s->Save(8, {}, "{\"a\": [1, 2],\n \"b\": \"x\"}").ok());
  auto c = s->Load(8);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->metadata, "{\"a\":[1,2],\"b\":\"x\"}");
}

// The new data wins; the earlier checkpoint of the step is kept, whole, under replaced/ and
// never counted or pruned as a checkpoint.
TEST_F(CheckpointStoreTest, ResavingAStepReplacesItsDataAndKeepsTheOldAside) {
  auto s = Open(1);
  auto a = Data(1000, 1), b = Data(2000, 2);
  ASSERT_TRUE(s->Save(5, {{"x", a}}, "").ok());
  ASSERT_TRUE(s->Save(5, {{"x", b}}, "").ok());
  auto c = s->LoadLatest();
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->blobs.at("x"), Str(b));
  EXPECT_EQ(*s->ListCommitted(), (std::vector<int64_t>{5}));
  auto kept = s->store().GetAll("replaced/ckpt-000005.1/x");
  ASSERT_TRUE(kept.ok()) << kept.status().ToString();
  EXPECT_EQ(*kept, Str(a));
  EXPECT_TRUE(s->store().GetAll("replaced/ckpt-000005.1/manifest.json").ok());
  ASSERT_TRUE(SaveStep(*s, 6).ok());  // prunes step 5 (keep_last 1), not what was set aside
  EXPECT_EQ(*s->ListCommitted(), (std::vector<int64_t>{6}));
  EXPECT_TRUE(s->store().GetAll("replaced/ckpt-000005.1/x").ok());
}

TEST_F(CheckpointStoreTest, KeepLastZeroKeepsEverything) {
  auto s = Open(0);
  for (int64_t step : {1, 2, 3, 4, 5}) ASSERT_TRUE(SaveStep(*s, step).ok());
  EXPECT_EQ(*s->ListCommitted(), (std::vector<int64_t>{1, 2, 3, 4, 5}));
}

// A caller that checksums its blob itself: the store checks only the size; the caller's check
// refuses a corrupt one with its own message and LoadLatest falls back to the previous step.
TEST_F(CheckpointStoreTest, CallerChecksRefuseCorruptBlobsWithTheirOwnMessage) {
  auto s = Open(5);
  auto save = [&](int64_t step) {
    auto d = Data(4096, int(step));
    const std::string meta = "{\"sum\":" + std::to_string(int(d[100]) + int(d[3000])) + "}";
    return s->Save(step, {{"data.bin", d, /*caller_checksums=*/true}}, meta);
  };
  int calls = 0;
  CheckpointCheck check = [&](Checkpoint& c) -> Status {
    ++calls;
    const std::string& d = c.blobs.at("data.bin");
    const std::string sum = std::to_string(int(uint8_t(d[100])) + int(uint8_t(d[3000])));
    if (c.metadata != "{\"sum\":" + sum + "}") return DataLossError("record 'r3000' is corrupt");
    return OkStatus();
  };
  ASSERT_TRUE(save(1).ok());
  ASSERT_TRUE(save(2).ok());
  auto manifest = s->store().GetAll("ckpt-000002/manifest.json");
  ASSERT_TRUE(manifest.ok());
  EXPECT_EQ(manifest->find("\"crc32c\""), std::string::npos) << *manifest;  // no blob CRC
  auto blob = s->store().GetAll("ckpt-000002/data.bin");
  ASSERT_TRUE(blob.ok());
  (*blob)[3000] ^= 0x10;
  ASSERT_TRUE(s->store().Put("ckpt-000002/data.bin", *blob).ok());
  EXPECT_TRUE(s->Load(2).ok()) << "no store CRC for a caller-checksummed blob";
  auto bad = s->Load(2, check);
  EXPECT_EQ(bad.status().code(), StatusCode::kDataLoss);
  EXPECT_NE(bad.status().message().find("r3000"), std::string::npos);

  std::vector<std::string> lines;
  std::mutex mu;
  SetLogSink([&](std::string_view line) {
    std::lock_guard<std::mutex> lock(mu);
    lines.emplace_back(line);
  });
  calls = 0;
  auto c = s->LoadLatest(check);
  SetLogSink(nullptr);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->step, 1);
  EXPECT_EQ(calls, 2);
  bool warned = false;
  for (const auto& l : lines) warned |= l.find("warning") != std::string::npos &&
                                        l.find("r3000") != std::string::npos;
  EXPECT_TRUE(warned);
  // A size change is still the store's to catch, with or without a check.
  ASSERT_TRUE(s->store().Put("ckpt-000001/data.bin", blob->substr(0, 4000)).ok());
  EXPECT_EQ(s->Load(1).status().code(), StatusCode::kDataLoss);
  SetLogLevel(LogLevel::kError);
  auto none = s->LoadLatest(check);
  SetLogLevel(LogLevel::kInfo);
  EXPECT_EQ(none.status().code(), StatusCode::kDataLoss);
  EXPECT_NE(none.status().message().find("r3000"), std::string::npos) << none.status().message();
}

// Blobs are read in pieces (a Ceph read takes at most 2 GiB; here pieces of 4 KiB, not a
// multiple of the blob sizes): the same bytes as one read.
TEST_F(CheckpointStoreTest, BlobsAreReadInPieces) {
  auto s = CheckpointStore::Open(uri_, {.keep_last = 3, .read_piece_bytes = 4096});
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  ASSERT_TRUE(SaveStep(**s, 7).ok());
  auto c = (*s)->Load(7);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->blobs.at("params"), Str(Data(100007, 7)));
  EXPECT_EQ(c->blobs.at("optim"), Str(Data(5000, 8)));
}

// A manifest whose blob size is absurd (a flipped high bit) is refused as a size mismatch,
// before any allocation of that size, and the previous checkpoint is used.
TEST_F(CheckpointStoreTest, AbsurdBlobSizeInTheManifestIsRefusedNotAllocated) {
  auto s = Open(5);
  for (int64_t step : {1, 2}) ASSERT_TRUE(SaveStep(*s, step).ok());
  auto text = s->store().GetAll("ckpt-000002/manifest.json");
  ASSERT_TRUE(text.ok());
  const std::string size = "\"bytes\": " + std::to_string(100002);
  const size_t at = text->find(size);
  ASSERT_NE(at, std::string::npos) << *text;
  text->replace(at, size.size(), "\"bytes\": 4611686018427387904");  // 2^62
  ASSERT_TRUE(s->store().Put("ckpt-000002/manifest.json", *text).ok());
  const Status st = s->Load(2).status();
  EXPECT_EQ(st.code(), StatusCode::kDataLoss) << st.ToString();
  EXPECT_NE(st.ToString().find("4611686018427387904"), std::string::npos) << st.ToString();
  auto c = s->LoadLatest();
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->step, 1);
}

TEST_F(CheckpointStoreTest, ForeignManifestIsDataLoss) {
  auto s = Open();
  ASSERT_TRUE(s->store().Put("ckpt-000001/manifest.json", std::string("{\"magic\": 1}")).ok());
  EXPECT_EQ(s->Load(1).status().code(), StatusCode::kDataLoss);
  ASSERT_TRUE(s->store().Put("ckpt-000001/manifest.json", std::string("{not json")).ok());
  EXPECT_EQ(s->Load(1).status().code(), StatusCode::kDataLoss);
}

// A newest checkpoint of another manifest version is not damage: LoadLatest stops with
// FailedPrecondition naming it instead of falling back to an older checkpoint, which would
// silently throw away its progress. Damage (DataLoss) still falls back.
TEST_F(CheckpointStoreTest, OtherManifestVersionStopsInsteadOfFallingBack) {
  auto s = Open();
  ASSERT_TRUE(SaveStep(*s, 1).ok());
  ASSERT_TRUE(SaveStep(*s, 2).ok());
  auto text = s->store().GetAll("ckpt-000002/manifest.json");
  ASSERT_TRUE(text.ok());
  const size_t at = text->find("\"version\":");
  ASSERT_NE(at, std::string::npos) << *text;
  std::string newer = *text;
  newer.replace(at, 11, "\"version\":9");
  newer.erase(at + 11, newer.find_first_of(",}", at + 11) - (at + 11));
  ASSERT_TRUE(s->store().Put("ckpt-000002/manifest.json", newer).ok());
  auto got = s->LoadLatest();
  EXPECT_EQ(got.status().code(), StatusCode::kFailedPrecondition) << got.status().ToString();
  EXPECT_NE(got.status().message().find("ckpt-000002"), std::string::npos);
  ASSERT_TRUE(s->store().Put("ckpt-000002/manifest.json", std::string("{\"magic\": 1}")).ok());
  got = s->LoadLatest();
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(got->step, 1);
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
    auto store = std::make_shared<PausingStore>(std::move(inner).value(), "/b2", fds[1]);
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
  auto leftovers = s->store().List("ckpt-000200/");
  ASSERT_TRUE(leftovers.ok());
  EXPECT_EQ(leftovers->size(), 2u) << "the writer should have stored b0 and b1 before dying";
  auto latest = s->LatestStep();
  ASSERT_TRUE(latest.ok());
  EXPECT_EQ(latest->value(), 100);
  auto ckpt = s->LoadLatest();
  ASSERT_TRUE(ckpt.ok()) << ckpt.status().ToString();
  EXPECT_EQ(ckpt->step, 100);
  EXPECT_EQ(ckpt->blobs.at("params"), Str(Data(100100, 100)));
  // The next successful save commits and clears the debris of the dead writer.
  ASSERT_TRUE(SaveStep(*s, 300).ok());
  leftovers = s->store().List("ckpt-000200/");
  ASSERT_TRUE(leftovers.ok());
  EXPECT_TRUE(leftovers->empty());
}

}  // namespace
}  // namespace gantry::storage::testing
