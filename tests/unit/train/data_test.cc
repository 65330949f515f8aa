// Data sources: token windows, text bytes, MNIST idx, .npy tensors, synthetic; deterministic
// order from (seed, epoch), rank sharding, position restore, and clear errors.
#include "train/data.h"
#include "train/data_records.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cstring>
#include <set>
#include <vector>

#include "storage/dataset.h"
#include "storage/object_store.h"
#include "tests/unit/train/train_test_util.h"

namespace gantry::train {
namespace {

using testing::Npy;
using testing::TempDir;
using testing::WriteFile;

Batch MakeBatch(const ModelSpec& m, int batch) {
  auto b = AllocateBatch(*BatchLayoutFor(m, batch), kernels::Device::Cpu());
  EXPECT_TRUE(b.ok());
  return *b;
}

std::unique_ptr<DataSource> Open(const DataSpec& d, const ModelSpec& m, DataOptions o) {
  auto s = OpenDataSource(d, m, o);
  EXPECT_TRUE(s.ok()) << s.status().ToString();
  return s.ok() ? std::move(*s) : nullptr;
}

// Writes tokens 0..n-1 (mod 1000) as uint16.
std::string U16Tokens(int n) {
  std::string bytes;
  for (int i = 0; i < n; ++i) {
    const uint16_t t = uint16_t(i % 1000);
    bytes.append(reinterpret_cast<const char*>(&t), 2);
  }
  return bytes;
}

TEST(DataTest, TokenWindowsShiftTargetsByOne) {
  TempDir dir;
  WriteFile(dir / "t.bin", U16Tokens(8 * 10 + 1));  // exactly 10 windows of context 8
  ModelSpec m = testing::TinyGpt(1000, 8);
  DataSpec d;
  d.uri = "file://" + (dir / "t.bin");
  auto src = Open(d, m, {2, 1});
  ASSERT_TRUE(src);
  EXPECT_EQ(src->batches_per_epoch(), 5);
  Batch b = MakeBatch(m, 2);
  std::set<int> starts;
  for (int i = 0; i < 5; ++i) {
    ASSERT_TRUE(src->Next(b).ok());
    for (int r = 0; r < 2; ++r) {
      const int32_t* in = b.inputs.i32() + r * 8;
      const int32_t* tg = b.targets.i32() + r * 8;
      EXPECT_EQ(in[0] % 8, 0);  // windows start at multiples of the context
      for (int t = 0; t < 8; ++t) {
        EXPECT_EQ(in[t], in[0] + t);
        EXPECT_EQ(tg[t], in[t] + 1);
      }
      starts.insert(in[0]);
    }
  }
  EXPECT_EQ(starts.size(), 10u);  // one epoch visits every window once
  EXPECT_EQ(src->position(), (DataPosition{1, 0}));
}

// uint32 token files (vocabularies past 65536): by the .u32 suffix or data.format, with ids
// above 16 bits intact; an id outside the model's vocabulary is refused naming it.
TEST(DataTest, U32TokensKeepIdsAbove16Bits) {
  TempDir dir;
  std::string bytes;
  for (uint32_t i = 0; i < 4 * 6 + 1; ++i) {
    const uint32_t t = 70000 + i;
    bytes.append(reinterpret_cast<const char*>(&t), 4);
  }
  WriteFile(dir / "t.u32", bytes);
  WriteFile(dir / "t.bin", bytes);
  ModelSpec m = testing::TinyGpt(100000, 4);
  for (const char* name : {"t.u32", "t.bin"}) {
    DataSpec d;
    d.uri = "file://" + (dir / name);
    if (std::string(name) == "t.bin") d.format = "tokens_u32";
    auto src = Open(d, m, {2, 1});
    ASSERT_TRUE(src) << name;
    EXPECT_EQ(src->batches_per_epoch(), 3) << name;
    Batch b = MakeBatch(m, 2);
    ASSERT_TRUE(src->Next(b).ok());
    for (int r = 0; r < 2; ++r) {
      const int32_t* in = b.inputs.i32() + r * 4;
      const int32_t* tg = b.targets.i32() + r * 4;
      EXPECT_GE(in[0], 70000) << name;
      EXPECT_EQ((in[0] - 70000) % 4, 0) << name;
      for (int t = 0; t < 4; ++t) {
        EXPECT_EQ(in[t], in[0] + t) << name;
        EXPECT_EQ(tg[t], in[t] + 1) << name;
      }
    }
  }
  ModelSpec small = testing::TinyGpt(1000, 4);
  DataSpec d;
  d.uri = "file://" + (dir / "t.u32");
  auto src = OpenDataSource(d, small, {2, 1});
  Status st = src.ok() ? [&] {
    Batch b = MakeBatch(small, 2);
    return (*src)->Next(b);
  }()
                       : src.status();
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("outside model.vocab 1000"), std::string::npos) << st.ToString();
  EXPECT_NE(st.message().find("token 700"), std::string::npos) << st.ToString();
}

// Bad content in a dataset made by `gantry dataset put` names the shard and the record in it
// (a batch mixes records of many shards): a u32 token above INT32_MAX, and a token outside the
// model's vocabulary.
TEST(DataTest, BadDatasetTokensNameTheirShardAndRecord) {
  for (const uint32_t bad : {3000000000u, 777u}) {
    TempDir dir;
    auto store = storage::OpenObjectStore("file://" + dir.path());
    ASSERT_TRUE(store.ok());
    storage::RecordLayout layout{.kind = storage::RecordKind::kTokens,
                                 .dtype = storage::DType::kU32, .window = 5};
    // 2 records per chunk, 2 chunks (4 records, 80 bytes) per shard: record 13 is shard 3's
    // record 1.
    auto w = storage::DatasetWriter::Create(store->get(), layout,
                                            {.shard_bytes = 80, .chunk_bytes = 40});
    ASSERT_TRUE(w.ok()) << w.status().ToString();
    for (uint32_t i = 0; i < 24; ++i) {
      std::vector<uint32_t> rec(5, i == 13 ? bad : i);
      ASSERT_TRUE((*w)->Append(std::as_bytes(std::span<uint32_t>(rec))).ok());
    }
    ASSERT_TRUE((*w)->Finish().ok());
    ModelSpec m = testing::TinyGpt(100, 4);
    DataSpec d;
    d.uri = "file://" + dir.path();
    auto src = Open(d, m, {4, 1});
    ASSERT_TRUE(src);
    Batch b = MakeBatch(m, 4);
    Status st = OkStatus();
    for (int i = 0; i < 12 && st.ok(); ++i) st = src->Next(b);
    ASSERT_FALSE(st.ok()) << "the bad record was never read";
    EXPECT_NE(st.message().find("shard-00003.bin record 1"), std::string::npos) << st.ToString();
    EXPECT_NE(st.message().find(std::to_string(bad)), std::string::npos) << st.ToString();
  }
}

TEST(DataTest, OrderIsAFunctionOfSeedAndEpochAndRestoreContinues) {
  ModelSpec m = testing::TinyGpt(50, 4);
  DataSpec d;
  d.synthetic_samples = 40;
  auto a = Open(d, m, {4, 3}), b = Open(d, m, {4, 3});
  Batch ba = MakeBatch(m, 4), bb = MakeBatch(m, 4);
  for (int i = 0; i < 13; ++i) ASSERT_TRUE(a->Next(ba).ok());  // into epoch 1
  const DataPosition pos = a->position();
  EXPECT_EQ(pos, (DataPosition{1, 3}));
  ASSERT_TRUE(b->Restore(pos).ok());
  for (int i = 0; i < 5; ++i) {
    ASSERT_TRUE(a->Next(ba).ok());
    ASSERT_TRUE(b->Next(bb).ok());
    ASSERT_EQ(0, std::memcmp(ba.inputs.raw(), bb.inputs.raw(), ba.inputs.nbytes()));
  }
  // Another seed orders (and generates) differently.
  DataSpec d2 = d;
  auto c = Open(d2, m, {4, 4});
  Batch bc = MakeBatch(m, 4);
  auto a0 = Open(d, m, {4, 3});
  ASSERT_TRUE(a0->Next(ba).ok());
  ASSERT_TRUE(c->Next(bc).ok());
  EXPECT_NE(0, std::memcmp(ba.inputs.raw(), bc.inputs.raw(), ba.inputs.nbytes()));
  EXPECT_EQ(a->Restore({0, 99}).code(), StatusCode::kOutOfRange);
}

// More records than the host can hold an epoch's order for: a clear error from Next, not
// std::bad_alloc ending the process (the job spec limits synthetic_samples; files can be big).
TEST(DataTest, AnOrderTooBigToAllocateIsAnError) {
  ModelSpec m = testing::TinyGpt(50, 4);
  DataSpec d;
  d.synthetic_samples = int64_t(1) << 60;
  auto a = Open(d, m, {4, 3});
  Batch b = MakeBatch(m, 4);
  Status st = a->Next(b);
  EXPECT_EQ(st.code(), StatusCode::kResourceExhausted) << st.ToString();
  EXPECT_NE(st.message().find("records"), std::string::npos) << st.ToString();
}

// A data file that is a FIFO (or a device) is refused at once; opening it used to wait for a
// writer forever.
TEST(DataTest, ADataFileThatIsNotARegularFileIsRefused) {
  TempDir dir;
  const std::string fifo = dir.path() + "/tokens.bin";
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
  DataSpec d;
  d.uri = fifo;
  d.format = "tokens_u16";
  auto s = OpenDataSource(d, testing::TinyGpt(50, 4), {2, 1});
  EXPECT_EQ(s.status().code(), StatusCode::kInvalidArgument) << s.status().ToString();
  EXPECT_NE(s.status().message().find("not a regular file"), std::string::npos)
      << s.status().ToString();
}

TEST(DataTest, EpochsUseDifferentOrders) {
  ModelSpec m = testing::TinyGpt(1000, 4);
  DataSpec d;
  d.synthetic_samples = 32;
  auto src = Open(d, m, {32, 1});
  Batch e0 = MakeBatch(m, 32), e1 = MakeBatch(m, 32);
  ASSERT_TRUE(src->Next(e0).ok());
  ASSERT_TRUE(src->Next(e1).ok());
  EXPECT_NE(0, std::memcmp(e0.inputs.raw(), e1.inputs.raw(), e0.inputs.nbytes()));
}

TEST(DataTest, RanksTakeDisjointRecords) {
  TempDir dir;
  WriteFile(dir / "t.bin", U16Tokens(4 * 24 + 1));
  ModelSpec m = testing::TinyGpt(1000, 4);
  DataSpec d;
  d.uri = dir / "t.bin";
  std::set<int> seen;
  for (int rank = 0; rank < 3; ++rank) {
    auto src = Open(d, m, {2, 7, rank, 3});
    Batch b = MakeBatch(m, 2);
    for (int i = 0; i < src->batches_per_epoch(); ++i) {
      ASSERT_TRUE(src->Next(b).ok());
      for (int r = 0; r < 2; ++r) EXPECT_TRUE(seen.insert(b.inputs.i32()[r * 4]).second);
    }
  }
  EXPECT_EQ(seen.size(), 24u);
}

TEST(DataTest, TextFilesAreByteTokens) {
  TempDir dir;
  WriteFile(dir / "a.txt", "hello world, hello gantry!");
  ModelSpec m = testing::TinyGpt(256, 5);
  DataSpec d;
  d.uri = dir / "a.txt";
  auto src = Open(d, m, {1, 1});
  EXPECT_EQ(src->tokenizer(), "bytes");
  Batch b = MakeBatch(m, 1);
  ASSERT_TRUE(src->Next(b).ok());
  const std::string text = "hello world, hello gantry!";
  std::string window;
  for (int t = 0; t < 5; ++t) window.push_back(char(b.inputs.i32()[t]));
  EXPECT_NE(text.find(window), std::string::npos) << window;
  ModelSpec small = testing::TinyGpt(100, 5);
  EXPECT_EQ(OpenDataSource(d, small, {1, 1}).status().code(), StatusCode::kInvalidArgument);
}

TEST(DataTest, TokenOutsideVocabularyNamesFileAndPosition) {
  TempDir dir;
  WriteFile(dir / "t.bin", U16Tokens(9));  // tokens 0..8
  ModelSpec m = testing::TinyGpt(5, 8);
  DataSpec d;
  d.uri = dir / "t.bin";
  auto src = Open(d, m, {1, 1});
  Batch b = MakeBatch(m, 1);
  Status s = src->Next(b);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("t.bin"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("position 5"), std::string::npos) << s.message();
}

TEST(DataTest, MissingFileNamesThePath) {
  DataSpec d;
  d.uri = "file:///nonexistent/gantry/tokens.bin";
  auto s = OpenDataSource(d, testing::TinyGpt(), {1, 1});
  ASSERT_EQ(s.status().code(), StatusCode::kNotFound);
  EXPECT_NE(s.status().message().find("/nonexistent/gantry/tokens.bin"), std::string::npos);
}

TEST(DataTest, TooFewRecordsForABatchIsAnError) {
  DataSpec d;
  d.synthetic_samples = 3;
  auto s = OpenDataSource(d, testing::TinyGpt(), {4, 1});
  EXPECT_EQ(s.status().code(), StatusCode::kInvalidArgument);
}

std::string BigEndian(uint32_t v) { return {char(v >> 24), char(v >> 16), char(v >> 8), char(v)}; }

TEST(DataTest, MnistIdxFilesAreNormalisedWithLabels) {
  TempDir dir;
  std::string images = BigEndian(0x803) + BigEndian(3) + BigEndian(2) + BigEndian(2);
  std::string labels = BigEndian(0x801) + BigEndian(3);
  for (int i = 0; i < 3; ++i) {
    for (int p = 0; p < 4; ++p) images.push_back(char(uint8_t(i * 100 + p)));
    labels.push_back(char(i + 1));
  }
  WriteFile(dir / "train-images-idx3-ubyte", images);
  WriteFile(dir / "train-labels-idx1-ubyte", labels);
  ModelSpec m;
  m.type = "mlp";
  m.widths = {4, 8, 5};
  DataSpec d;
  d.uri = "mnist://" + dir.path();
  auto src = Open(d, m, {3, 1});
  Batch b = MakeBatch(m, 3);
  ASSERT_TRUE(src->Next(b).ok());
  for (int r = 0; r < 3; ++r) {
    const int label = b.targets.i32()[r];
    const int i = label - 1;
    EXPECT_FLOAT_EQ(b.inputs.f32()[r * 4 + 1], float(i * 100 + 1) / 255.0f);
  }
  m.widths = {9, 5};  // wrong input width
  EXPECT_EQ(OpenDataSource(d, m, {3, 1}).status().code(), StatusCode::kInvalidArgument);
}

TEST(DataTest, NpyTensorsWithIntLabels) {
  TempDir dir;
  std::vector<float> x = {0, 1, 2, 3, 4, 5};  // 2 samples x 3 features
  std::vector<int64_t> y = {4, 1};
  WriteFile(dir / "inputs.npy", Npy("<f4", "(2, 3)", std::string((char*)x.data(), 24)));
  WriteFile(dir / "targets.npy", Npy("<i8", "(2,)", std::string((char*)y.data(), 16)));
  ModelSpec m;
  m.type = "mlp";
  m.widths = {3, 5};
  DataSpec d;
  d.uri = dir.path();  // format inferred from inputs.npy
  auto src = Open(d, m, {2, 1});
  Batch b = MakeBatch(m, 2);
  ASSERT_TRUE(src->Next(b).ok());
  for (int r = 0; r < 2; ++r) {
    const int sample = b.inputs.f32()[r * 3] == 0 ? 0 : 1;
    EXPECT_EQ(b.targets.i32()[r], y[sample]);
    EXPECT_EQ(b.inputs.f32()[r * 3 + 2], x[sample * 3 + 2]);
  }
  y[1] = 7;  // outside the 5 classes
  WriteFile(dir / "targets.npy", Npy("<i8", "(2,)", std::string((char*)y.data(), 16)));
  auto bad = Open(d, m, {2, 1});
  Status s = OkStatus();
  for (int i = 0; i < 2 && s.ok(); ++i) s = bad->Next(b);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
}

TEST(DataTest, SyntheticClassificationIsDeterministicAndLabelled) {
  ModelSpec m = testing::TinyMlp();
  DataSpec d;
  d.synthetic_samples = 64;
  auto a = Open(d, m, {8, 1}), b = Open(d, m, {8, 1});
  Batch ba = MakeBatch(m, 8), bb = MakeBatch(m, 8);
  ASSERT_TRUE(a->Next(ba).ok());
  ASSERT_TRUE(b->Next(bb).ok());
  EXPECT_EQ(0, std::memcmp(ba.inputs.raw(), bb.inputs.raw(), ba.inputs.nbytes()));
  for (int r = 0; r < 8; ++r) {
    // label = the feature group (j % classes) with the largest sum
    std::vector<double> sums(5, 0);
    for (int j = 0; j < 12; ++j) sums[j % 5] += ba.inputs.f32()[r * 12 + j];
    EXPECT_EQ(ba.targets.i32()[r], std::max_element(sums.begin(), sums.end()) - sums.begin());
  }
}

// Records read 8 at a time (AVX-512: 8 generators side by side, then transposed into rows)
// are the bytes one-at-a-time reads give: row counts with and without a remainder, feature
// counts with and without a partial 8-block, one-hot (mse) targets too.
TEST(DataTest, SyntheticRowsReadTogetherEqualRowsReadAlone) {
  for (const char* loss : {"cross_entropy", "mse"}) {
    for (int64_t features : {37, 64, 784}) {
      ModelSpec m = testing::TinyMlp("tanh", loss);
      m.widths = {features, 8, 3};
      auto set = OpenSyntheticRecords(m, 5, 1000);
      ASSERT_TRUE(set.ok()) << set.status().ToString();
      for (int64_t n : {8, 21}) {
        Batch together = MakeBatch(m, int(n)), alone = MakeBatch(m, int(n));
        std::vector<int64_t> idx;
        for (int64_t i = 0; i < n; ++i) idx.push_back((i * 389 + 17) % 1000);
        ASSERT_TRUE((*set)->ReadRows(idx.data(), n, together, 0).ok());
        for (int64_t i = 0; i < n; ++i) ASSERT_TRUE((*set)->Read(idx[size_t(i)], alone, i).ok());
        EXPECT_EQ(0, std::memcmp(together.inputs.raw(), alone.inputs.raw(), alone.inputs.nbytes()))
            << loss << " features " << features << " rows " << n;
        EXPECT_EQ(0,
                  std::memcmp(together.targets.raw(), alone.targets.raw(), alone.targets.nbytes()))
            << loss << " features " << features << " rows " << n;
        std::set<float> distinct(alone.inputs.f32(), alone.inputs.f32() + alone.inputs.numel());
        EXPECT_GT(distinct.size(), size_t(n * features / 2));  // really random, not a fill
      }
    }
  }
}

}  // namespace
}  // namespace gantry::train
