// Checkpoints: round trip, commit through storage::CheckpointStore (manifest last, latest
// pointer, keep-last-N), corruption (refused naming the tensor, previous one used), missing
// manifest (skipped), truncation, re-saving a step.
#include "train/checkpoint.h"

#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <mutex>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/logging.h"
#include "storage/checkpoint_store.h"
#include "tests/unit/train/train_test_util.h"

namespace gantry::train {
namespace {

namespace fs = std::filesystem;
using kernels::Tensor;
using testing::ReadFile;
using testing::TempDir;
using testing::WriteFile;

struct Fixture {
  Tensor a = *Tensor::Empty({4, 3});
  Tensor b = *Tensor::Empty({5});
  Fixture() {
    for (int i = 0; i < 12; ++i) a.f32()[i] = float(i) * 0.5f;
    for (int i = 0; i < 5; ++i) b.f32()[i] = -float(i);
  }
  std::vector<NamedTensor> tensors() { return {{"layers.0.weight", a}, {"layers.0.bias", b}}; }
};

CheckpointMeta Meta(int64_t step) {
  CheckpointMeta m;
  m.step = step;
  m.data = {2, uint64_t(step)};
  m.rng = {1, 2, 3, uint64_t(step)};
  m.model = testing::TinyMlp();
  m.optimizer.type = "adamw";
  m.optimizer.lr = 3e-4;
  m.tokenizer = "bytes";
  m.job = "unit";
  return m;
}

std::unique_ptr<Checkpointer> OpenAt(const std::string& dir, int keep) {
  auto c = Checkpointer::Open(dir, keep);
  EXPECT_TRUE(c.ok()) << c.status().ToString();
  return std::move(*c);
}

TEST(CheckpointTest, NamesCarryTheStep) {
  EXPECT_EQ(CheckpointName(200), "ckpt-000200");
  EXPECT_EQ(CheckpointStep("ckpt-000200"), 200);
  EXPECT_EQ(CheckpointStep("ckpt-12x"), -1);
  EXPECT_EQ(CheckpointStep("latest"), -1);
}

TEST(CheckpointTest, RoundTripRestoresTensorsAndMeta) {
  TempDir dir;
  Fixture f;
  auto ck = OpenAt(dir.path(), 3);
  ASSERT_TRUE(ck->Save(Meta(7), f.tensors()).ok());
  EXPECT_EQ(ReadFile(dir / "latest"), "ckpt-000007\n");
  EXPECT_TRUE(fs::exists(dir / "ckpt-000007/manifest.json"));
  auto loaded = ck->ReadNewestValid();
  ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
  EXPECT_EQ(loaded->meta.step, 7);
  EXPECT_EQ(loaded->meta.data, (DataPosition{2, 7}));
  EXPECT_EQ(loaded->meta.rng, (Rng::State{1, 2, 3, 7}));
  EXPECT_TRUE(loaded->meta.model == testing::TinyMlp());
  EXPECT_EQ(loaded->meta.optimizer.lr, 3e-4);
  EXPECT_EQ(loaded->meta.tokenizer, "bytes");
  Fixture g;
  for (int i = 0; i < 12; ++i) g.a.f32()[i] = 0;
  for (int i = 0; i < 5; ++i) g.b.f32()[i] = 0;
  ASSERT_TRUE(loaded->Restore(g.tensors()).ok());
  EXPECT_EQ(0, std::memcmp(f.a.raw(), g.a.raw(), f.a.nbytes()));
  EXPECT_EQ(0, std::memcmp(f.b.raw(), g.b.raw(), f.b.nbytes()));
  // A tensor of another shape is refused with its name.
  Tensor wrong = *Tensor::Empty({6});
  Status s = loaded->Restore({{"layers.0.bias", wrong}});
  EXPECT_NE(s.message().find("layers.0.bias"), std::string::npos);
}

TEST(CheckpointTest, SameStateGivesIdenticalBytes) {
  TempDir d1, d2;
  Fixture f;
  ASSERT_TRUE(OpenAt(d1.path(), 3)->Save(Meta(4), f.tensors()).ok());
  ASSERT_TRUE(OpenAt(d2.path(), 3)->Save(Meta(4), f.tensors()).ok());
  for (const char* file : {"ckpt-000004/manifest.json", "ckpt-000004/data.bin", "latest"}) {
    EXPECT_EQ(ReadFile(d1 / file), ReadFile(d2 / file)) << file;
  }
}

TEST(CheckpointTest, KeepLastRemovesOnlyOlderCommittedOnes) {
  TempDir dir;
  Fixture f;
  auto ck = OpenAt(dir.path(), 2);
  for (int step : {10, 20, 30}) ASSERT_TRUE(ck->Save(Meta(step), f.tensors()).ok());
  auto names = ck->ListCommitted();
  ASSERT_TRUE(names.ok());
  EXPECT_EQ(*names, (std::vector<std::string>{"ckpt-000020", "ckpt-000030"}));
  EXPECT_FALSE(fs::exists(dir / "ckpt-000010"));
  EXPECT_EQ(ReadFile(dir / "latest"), "ckpt-000030\n");
}

// Flips one byte inside tensor `name` of checkpoint `ckpt`.
void Corrupt(const TempDir& dir, const std::string& ckpt, int64_t byte_offset) {
  std::string data = ReadFile(dir / (ckpt + "/data.bin"));
  data[byte_offset] ^= 0x40;
  WriteFile(dir / (ckpt + "/data.bin"), data);
}

TEST(CheckpointTest, CorruptTensorIsRefusedByNameAndThePreviousOneUsed) {
  TempDir dir;
  Fixture f;
  auto ck = OpenAt(dir.path(), 3);
  ASSERT_TRUE(ck->Save(Meta(1), f.tensors()).ok());
  ASSERT_TRUE(ck->Save(Meta(2), f.tensors()).ok());
  Corrupt(dir, "ckpt-000002", 48 + 2);  // inside layers.0.bias (after 48 bytes of weight)
  auto bad = ck->Read("ckpt-000002");
  ASSERT_EQ(bad.status().code(), StatusCode::kDataLoss);
  EXPECT_NE(bad.status().message().find("'layers.0.bias'"), std::string::npos)
      << bad.status().message();

  std::vector<std::string> lines;
  std::mutex mu;
  SetLogSink([&](std::string_view line) {
    std::lock_guard<std::mutex> lock(mu);
    lines.emplace_back(line);
  });
  auto loaded = ck->ReadNewestValid();
  SetLogSink(nullptr);
  ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
  EXPECT_EQ(loaded->meta.step, 1);
  bool warned = false;
  for (const std::string& l : lines) {
    warned |=
        l.find("\"warning\"") != std::string::npos && l.find("layers.0.bias") != std::string::npos;
  }
  EXPECT_TRUE(warned);
}

// The metadata (step, data position, RNG) is checksummed like the tensors: a changed step
// inside it (one flipped bit turns 3 into 7) used to be trusted, skipping steps and letting
// keep-last prune the good checkpoints. Now the checkpoint is refused and the previous used.
TEST(CheckpointTest, DamagedMetadataIsRefusedAndThePreviousOneUsed) {
  for (const std::string& field : {std::string("\"step\": 2"), std::string("\"job\": \"unit\"")}) {
    TempDir dir;
    Fixture f;
    auto ck = OpenAt(dir.path(), 3);
    ASSERT_TRUE(ck->Save(Meta(1), f.tensors()).ok());
    ASSERT_TRUE(ck->Save(Meta(2), f.tensors()).ok());
    const std::string path = dir.path() + "/ckpt-000002/manifest.json";
    std::string text = ReadFile(path);
    // The metadata's copy of the field (the top-level "step" comes first in the manifest).
    const size_t md = text.find("\"metadata\"");
    ASSERT_NE(md, std::string::npos) << text;
    const size_t at = text.find(field, md);
    ASSERT_NE(at, std::string::npos) << field << " in " << text;
    const std::string changed = field == "\"step\": 2" ? "\"step\": 6" : "\"job\": \"uniT\"";
    text.replace(at, field.size(), changed);
    WriteFile(path, text);
    auto bad = ck->Read("ckpt-000002");
    ASSERT_EQ(bad.status().code(), StatusCode::kDataLoss) << field;
    EXPECT_NE(bad.status().message().find("metadata"), std::string::npos) << bad.status().ToString();
    auto loaded = ck->ReadNewestValid();
    ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
    EXPECT_EQ(loaded->meta.step, 1) << field;
  }
}

TEST(CheckpointTest, AllCorruptIsDataLoss) {
  TempDir dir;
  Fixture f;
  auto ck = OpenAt(dir.path(), 3);
  ASSERT_TRUE(ck->Save(Meta(1), f.tensors()).ok());
  Corrupt(dir, "ckpt-000001", 0);
  SetLogLevel(LogLevel::kError);
  auto loaded = ck->ReadNewestValid();
  SetLogLevel(LogLevel::kInfo);
  EXPECT_EQ(loaded.status().code(), StatusCode::kDataLoss);
  EXPECT_NE(loaded.status().message().find("layers.0.weight"), std::string::npos);
}

TEST(CheckpointTest, MissingManifestMeansUncommittedAndIsSkipped) {
  TempDir dir;
  Fixture f;
  auto ck = OpenAt(dir.path(), 3);
  ASSERT_TRUE(ck->Save(Meta(1), f.tensors()).ok());
  ASSERT_TRUE(ck->Save(Meta(2), f.tensors()).ok());
  fs::remove(dir / "ckpt-000002/manifest.json");
  EXPECT_EQ(*ck->ListCommitted(), (std::vector<std::string>{"ckpt-000001"}));
  auto loaded = ck->ReadNewestValid();
  ASSERT_TRUE(loaded.ok());
  EXPECT_EQ(loaded->meta.step, 1);
  EXPECT_EQ(ck->Read("ckpt-000002").status().code(), StatusCode::kNotFound);
  // Saving step 2 again commits it over the leftover data.
  ASSERT_TRUE(ck->Save(Meta(2), f.tensors()).ok());
  EXPECT_EQ(ck->ReadNewestValid()->meta.step, 2);
}

TEST(CheckpointTest, TruncatedDataIsRefused) {
  TempDir dir;
  Fixture f;
  auto ck = OpenAt(dir.path(), 3);
  ASSERT_TRUE(ck->Save(Meta(3), f.tensors()).ok());
  std::string data = ReadFile(dir / "ckpt-000003/data.bin");
  WriteFile(dir / "ckpt-000003/data.bin", data.substr(0, data.size() - 4));
  EXPECT_EQ(ck->Read("ckpt-000003").status().code(), StatusCode::kDataLoss);
}

// The commit protocol is the storage checkpoint store's: a Checkpointer's checkpoints are its
// checkpoints, with data.bin checksummed per tensor (by us) and not again as a whole blob.
TEST(CheckpointTest, CheckpointsAreStorageCheckpointStoreCheckpoints) {
  TempDir dir;
  Fixture f;
  ASSERT_TRUE(OpenAt(dir.path(), 3)->Save(Meta(7), f.tensors()).ok());
  auto store = storage::CheckpointStore::Open(dir.path());
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  EXPECT_EQ(*(*store)->LatestStep(), std::optional<int64_t>(7));
  auto raw = (*store)->Load(7);
  ASSERT_TRUE(raw.ok()) << raw.status().ToString();
  EXPECT_EQ(raw->blobs.at("data.bin").size(), 48u + 20u);
  auto manifest = nlohmann::json::parse(ReadFile(dir / "ckpt-000007/manifest.json"));
  const auto& blob = manifest.at("blobs").at(0);
  EXPECT_EQ(blob.at("name"), "data.bin");
  EXPECT_EQ(blob.at("checksum"), "caller");
  EXPECT_FALSE(blob.contains("crc32c"));
  const auto& meta = manifest.at("metadata");
  EXPECT_EQ(meta.at("magic"), kCheckpointMagic);
  EXPECT_EQ(meta.at("step"), 7);
  ASSERT_EQ(meta.at("tensors").size(), 2u);
  EXPECT_EQ(meta.at("tensors").at(1).at("name"), "layers.0.bias");
  EXPECT_EQ(meta.at("tensors").at(1).at("offset"), 48);
  EXPECT_EQ(meta.at("tensors").at(1).at("crc32c").get<std::string>().size(), 8u);
}

// The step's checkpoint is the new one; the earlier one is kept byte for byte under
// replaced/ (a save never destroys a checkpoint, even one that was refused as corrupt).
TEST(CheckpointTest, SavingAStepAgainReplacesItAndKeepsTheOldOneAside) {
  TempDir dir;
  Fixture f;
  auto ck = OpenAt(dir.path(), 3);
  ASSERT_TRUE(ck->Save(Meta(3), f.tensors()).ok());
  const std::string first = ReadFile(dir / "ckpt-000003/data.bin");
  const std::string first_manifest = ReadFile(dir / "ckpt-000003/manifest.json");
  for (int i = 0; i < 5; ++i) f.b.f32()[i] = 100.0f + float(i);
  ASSERT_TRUE(ck->Save(Meta(3), f.tensors()).ok());
  EXPECT_TRUE(ReadFile(dir / "replaced/ckpt-000003.1/data.bin") == first);
  EXPECT_TRUE(ReadFile(dir / "replaced/ckpt-000003.1/manifest.json") == first_manifest);
  EXPECT_FALSE(ReadFile(dir / "ckpt-000003/data.bin") == first);
  ASSERT_TRUE(ck->Save(Meta(3), f.tensors()).ok());  // again: the next free slot
  EXPECT_TRUE(fs::exists(dir / "replaced/ckpt-000003.2/data.bin"));
  EXPECT_TRUE(ReadFile(dir / "replaced/ckpt-000003.1/data.bin") == first);
  auto loaded = ck->ReadNewestValid();
  ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
  Fixture g;
  ASSERT_TRUE(loaded->Restore(g.tensors()).ok());
  EXPECT_EQ(g.b.f32()[4], 104.0f);
  EXPECT_EQ(*ck->ListCommitted(), (std::vector<std::string>{"ckpt-000003"}));
  EXPECT_EQ(ck->Read("latest").status().code(), StatusCode::kInvalidArgument);
}

TEST(CheckpointTest, EmptyStoreIsNotFound) {
  TempDir dir;
  EXPECT_EQ(OpenAt(dir.path(), 3)->ReadNewestValid().status().code(), StatusCode::kNotFound);
}

TEST(CheckpointTest, ForeignManifestIsRejected) {
  TempDir dir;
  fs::create_directories(dir / "ckpt-000001");
  WriteFile(dir / "ckpt-000001/manifest.json", R"({"magic": "something-else"})");
  WriteFile(dir / "ckpt-000001/data.bin", "");
  EXPECT_EQ(OpenAt(dir.path(), 3)->Read("ckpt-000001").status().code(), StatusCode::kDataLoss);
}

}  // namespace
}  // namespace gantry::train
