// Datasets and the loader on the local store: index round trip, verification, corruption
// reported with the shard key, deterministic and disjoint rank order, equal batches per rank,
// exact resume from a saved position.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <set>

#include "storage/dataset.h"
#include "storage/loader.h"
#include "storage/local/local_object_store.h"
#include "tests/unit/storage/store_test_env.h"

namespace gantry::storage::testing {
namespace {

constexpr int kWindow = 4;

// Writes `n` token records; record i holds tokens {i, i, i, i} (u32) so tests can identify it.
std::shared_ptr<ObjectStore> MakeDataset(const std::string& dir, uint32_t n, uint64_t chunk_records,
                                         uint64_t shard_chunks) {
  auto store = OpenObjectStore("file://" + dir);
  EXPECT_TRUE(store.ok());
  RecordLayout layout;
  layout.kind = RecordKind::kTokens;
  layout.dtype = DType::kU32;
  layout.window = kWindow;
  DatasetWriterOptions o;
  o.chunk_bytes = chunk_records * kWindow * 4;
  o.shard_bytes = o.chunk_bytes * shard_chunks;
  auto w = DatasetWriter::Create(store->get(), layout, o);
  EXPECT_TRUE(w.ok());
  std::vector<uint32_t> rec(kWindow);
  for (uint32_t i = 0; i < n; ++i) {
    std::fill(rec.begin(), rec.end(), i);
    EXPECT_TRUE((*w)->Append(std::as_bytes(std::span<uint32_t>(rec))).ok());
  }
  auto idx = (*w)->Finish();
  EXPECT_TRUE(idx.ok()) << idx.status().ToString();
  return std::shared_ptr<ObjectStore>(std::move(store).value());
}

// Record ids of one batch.
std::vector<uint32_t> Ids(const std::vector<std::byte>& batch) {
  std::vector<uint32_t> ids;
  for (size_t off = 0; off < batch.size(); off += kWindow * 4) {
    uint32_t v[kWindow];
    std::memcpy(v, batch.data() + off, sizeof(v));
    EXPECT_TRUE(std::all_of(v, v + kWindow, [&](uint32_t x) { return x == v[0]; })) << "torn record";
    ids.push_back(v[0]);
  }
  return ids;
}

std::unique_ptr<DatasetLoader> MakeLoader(std::shared_ptr<ObjectStore> store, LoaderOptions o) {
  auto idx = ReadDatasetIndex(*store);
  EXPECT_TRUE(idx.ok()) << idx.status().ToString();
  auto loader = DatasetLoader::Create(store, *idx, o);
  EXPECT_TRUE(loader.ok()) << loader.status().ToString();
  return loader.ok() ? std::move(loader).value() : nullptr;
}

std::vector<std::vector<uint32_t>> ReadBatches(DatasetLoader& loader, int n) {
  std::vector<std::vector<uint32_t>> out;
  std::vector<std::byte> buf(loader.batch_bytes());
  for (int i = 0; i < n; ++i) {
    Status st = loader.Next(buf);
    EXPECT_TRUE(st.ok()) << st.ToString();
    out.push_back(Ids(buf));
  }
  return out;
}

TEST(DatasetTest, IndexRoundTripsAndVerifies) {
  TempDir dir;
  auto store = MakeDataset(dir.path(), 1000, 16, 4);
  auto idx = ReadDatasetIndex(*store);
  ASSERT_TRUE(idx.ok()) << idx.status().ToString();
  EXPECT_EQ(idx->TotalRecords(), 1000u);
  EXPECT_EQ(idx->chunk_records, 16u);
  EXPECT_EQ(idx->shards.size(), 16u);  // 64 records per shard
  EXPECT_EQ(idx->shards.back().records, 1000u - 15 * 64);
  EXPECT_EQ(idx->layout.RecordBytes(), 16u);
  auto again = DatasetIndex::FromJson(idx->ToJson(), "test");
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->ToJson(), idx->ToJson());
  uint64_t last = 0;
  EXPECT_TRUE(VerifyDataset(*store, *idx, [&](uint64_t done) { last = done; }).ok());
  EXPECT_EQ(last, 16000u);
}

TEST(DatasetTest, CorruptShardIsReportedWithItsKeyByVerifyAndLoader) {
  TempDir dir;
  auto store = MakeDataset(dir.path(), 256, 16, 4);
  auto shard = store->GetAll("shard-00002.bin");
  ASSERT_TRUE(shard.ok());
  (*shard)[100] ^= 0x40;
  ASSERT_TRUE(store->Put("shard-00002.bin", *shard).ok());
  auto idx = ReadDatasetIndex(*store);
  ASSERT_TRUE(idx.ok());
  Status st = VerifyDataset(*store, *idx);
  EXPECT_EQ(st.code(), StatusCode::kDataLoss);
  EXPECT_NE(st.message().find("shard-00002.bin"), std::string::npos) << st.message();
  auto loader = MakeLoader(store, {.batch = 8});
  std::vector<std::byte> buf(loader->batch_bytes());
  Status err;
  for (int i = 0; i < 32 && err.ok(); ++i) err = loader->Next(buf);
  EXPECT_EQ(err.code(), StatusCode::kDataLoss) << "a corrupt chunk was used silently";
  EXPECT_NE(err.message().find("shard-00002.bin"), std::string::npos) << err.message();
}

// An index whose numbers would size buffers from garbage (a product that wraps, a record or
// chunk of terabytes) is refused as damaged instead of crashing the reader.
TEST(DatasetTest, IndexWithAbsurdSizesIsRefusedNotAllocated) {
  TempDir dir;
  auto store = MakeDataset(dir.path(), 256, 16, 4);
  auto idx = ReadDatasetIndex(*store);
  ASSERT_TRUE(idx.ok());
  const std::string good = idx->ToJson();
  auto edit = [&](const std::string& from, const std::string& to) {
    std::string j = good;
    const size_t at = j.find(from);
    EXPECT_NE(at, std::string::npos) << from;
    return at == std::string::npos ? j : j.replace(at, from.size(), to);
  };
  const std::string records = "\"records\": " + std::to_string(idx->shards[0].records);
  const std::string bytes = "\"bytes\": " + std::to_string(idx->shards[0].bytes);
  // 2^62 records of 16 bytes wrap to 0 bytes; 2^60 ones need 16 EiB.
  for (const std::string& bad :
       {edit(records, "\"records\": 4611686018427387904"),
        edit(bytes, "\"bytes\": 0"),
        edit("\"chunk_records\": 16", "\"chunk_records\": 1099511627776"),
        edit("\"window\": 4", "\"window\": 4611686018427387904")}) {
    auto parsed = DatasetIndex::FromJson(bad, "idx.json");
    ASSERT_FALSE(parsed.ok()) << bad;
    EXPECT_NE(parsed.status().message().find("idx.json"), std::string::npos)
        << parsed.status().ToString();
  }
  RecordLayout huge{.kind = RecordKind::kTensors, .dtype = DType::kF32,
                    .shape = {1ll << 31, 1ll << 31, 4}};
  EXPECT_NE(huge.Validate().message().find("too large"), std::string::npos);
}

TEST(DatasetTest, MissingIndexIsNotFoundWithAHint) {
  TempDir dir;
  auto store = OpenObjectStore("file://" + dir.path());
  ASSERT_TRUE(store.ok());
  auto idx = ReadDatasetIndex(**store);
  EXPECT_EQ(idx.status().code(), StatusCode::kNotFound);
  EXPECT_NE(idx.status().message().find("gantry dataset put"), std::string::npos);
}

TEST(DatasetTest, DecodersWidenTokensAndScaleImages) {
  RecordLayout tokens{.kind = RecordKind::kTokens, .dtype = DType::kU16, .window = 3};
  uint16_t raw[3] = {1, 65535, 7};
  int32_t out[3];
  ASSERT_TRUE(DecodeTokens(tokens, std::as_bytes(std::span<uint16_t>(raw)), out).ok());
  EXPECT_EQ(out[1], 65535);
  RecordLayout img{.kind = RecordKind::kTensors, .dtype = DType::kU8, .shape = {2}};
  std::byte rec[6] = {std::byte{0}, std::byte{255}, std::byte{9}, std::byte{0}, std::byte{0}, std::byte{0}};
  float x[2];
  int32_t y;
  ASSERT_TRUE(DecodeTensors(img, rec, x, &y).ok());
  EXPECT_FLOAT_EQ(x[1], 1.0f);
  EXPECT_EQ(y, 9);
}

TEST(LoaderTest, RanksGetDisjointRecordsAndEqualBatchCounts) {
  TempDir dir;
  auto store = MakeDataset(dir.path(), 1003, 10, 3);  // 101 chunks, uneven last ones
  std::set<uint32_t> seen;
  uint64_t batches = 0;
  for (int rank = 0; rank < 3; ++rank) {
    auto loader = MakeLoader(store, {.seed = 5, .rank = rank, .world = 3, .batch = 7,
                                     .group_chunks = 3, .group_buffers = 2});
    if (rank == 0) batches = loader->BatchesInEpoch(0);
    EXPECT_EQ(loader->BatchesInEpoch(0), batches);
    for (auto& b : ReadBatches(*loader, static_cast<int>(batches))) {
      for (uint32_t id : b) {
        EXPECT_LT(id, 1003u);
        EXPECT_TRUE(seen.insert(id).second) << "record " << id << " read twice in one epoch";
      }
    }
    EXPECT_EQ(loader->position(), (LoaderPosition{1, 0}));
  }
  EXPECT_GT(batches, 40u);  // 1003 / 3 / 7 = 47 minus what uneven chunks cost
  EXPECT_EQ(seen.size(), batches * 7 * 3);
}

TEST(LoaderTest, OrderIsDeterministicPerSeedAndEpoch) {
  TempDir dir;
  auto store = MakeDataset(dir.path(), 500, 10, 2);
  LoaderOptions o{.seed = 9, .batch = 10};
  auto a = ReadBatches(*MakeLoader(store, o), 100);  // two epochs (50 batches each)
  auto b = ReadBatches(*MakeLoader(store, o), 100);
  EXPECT_EQ(a, b);
  std::vector<std::vector<uint32_t>> e0(a.begin(), a.begin() + 50), e1(a.begin() + 50, a.end());
  EXPECT_NE(e0, e1) << "epochs must reshuffle";
  o.seed = 10;
  EXPECT_NE(ReadBatches(*MakeLoader(store, o), 50), e0) << "seed must change the order";
  std::vector<uint32_t> flat;
  for (auto& v : e0) flat.insert(flat.end(), v.begin(), v.end());
  std::sort(flat.begin(), flat.end());
  for (uint32_t i = 0; i < 500; ++i) ASSERT_EQ(flat[i], i) << "epoch 0 is not a permutation";
}

TEST(LoaderTest, SeekToASavedPositionContinuesExactly) {
  TempDir dir;
  auto store = MakeDataset(dir.path(), 600, 8, 4);
  LoaderOptions o{.seed = 3, .rank = 1, .world = 2, .batch = 6, .prefetch_batches = 3,
                  .group_chunks = 2, .group_buffers = 2};
  auto first = MakeLoader(store, o);
  const uint64_t per_epoch = first->BatchesInEpoch(0);
  ReadBatches(*first, static_cast<int>(per_epoch) - 3);  // stop just before an epoch boundary
  LoaderPosition saved = first->position();
  auto text = saved.ToString();
  auto expected = ReadBatches(*first, 8);  // crosses into epoch 1
  auto parsed = LoaderPosition::Parse(text);
  ASSERT_TRUE(parsed.ok());
  auto resumed = MakeLoader(store, o);
  ReadBatches(*resumed, 2);  // it was somewhere else
  ASSERT_TRUE(resumed->Seek(*parsed).ok());
  EXPECT_EQ(resumed->position(), saved);
  EXPECT_EQ(ReadBatches(*resumed, 8), expected);
}

TEST(LoaderTest, TooLittleDataForTheWorldIsAClearError) {
  TempDir dir;
  auto store = MakeDataset(dir.path(), 20, 10, 4);  // 2 chunks
  auto idx = ReadDatasetIndex(*store);
  ASSERT_TRUE(idx.ok());
  auto loader = DatasetLoader::Create(store, *idx, {.rank = 0, .world = 4, .batch = 2});
  ASSERT_FALSE(loader.ok());
  EXPECT_EQ(loader.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(loader.status().message().find("smaller chunks"), std::string::npos);
  EXPECT_EQ(LoaderPosition::Parse("x:1").status().code(), StatusCode::kInvalidArgument);
}

// Chunks of unequal size (a shard's short last chunk) land on different ranks in different
// epochs. The batch count is bounded by the smallest share any epoch can give, so it is the
// same in every epoch: a later epoch can never come up short mid-training, and a dataset too
// small for that is refused when the loader is made.
TEST(LoaderTest, BatchCountIsTheSameInEveryEpochWithUnequalChunks) {
  TempDir dir;
  auto store = MakeDataset(dir.path(), 17, 8, 4);  // one shard: chunks of 8, 8 and 1 records
  LoaderOptions o{.seed = 5, .rank = 0, .world = 2, .batch = 1, .prefetch_batches = 2,
                  .group_chunks = 1, .group_buffers = 2};
  for (int rank = 0; rank < 2; ++rank) {
    o.rank = rank;
    auto loader = MakeLoader(store, o);
    for (uint64_t e = 0; e < 40; ++e) ASSERT_EQ(loader->BatchesInEpoch(e), 1u) << "epoch " << e;
    ReadBatches(*loader, 40);  // 40 epochs, none short
  }
  o.batch = 2;  // some epoch gives a rank only the 1-record chunk
  auto refused = DatasetLoader::Create(store, *ReadDatasetIndex(*store), o);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("in some epoch"), std::string::npos)
      << refused.status().ToString();
}

TEST(LoaderTest, WrongBufferSizeIsRejected) {
  TempDir dir;
  auto store = MakeDataset(dir.path(), 100, 10, 4);
  auto loader = MakeLoader(store, {.batch = 4});
  std::vector<std::byte> small(10);
  EXPECT_EQ(loader->Next(small).code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace gantry::storage::testing
