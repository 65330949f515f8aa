// Ingest of text, token, MNIST idx and .npy files: records, layout and labels come out as
// the source says; bad sources are clear errors.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cstring>
#include <fstream>

#include "storage/dataset_ingest.h"
#include "storage/loader.h"
#include "tests/unit/storage/store_test_env.h"

namespace gantry::storage::testing {
namespace {

void WriteFile(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary) << bytes;
}

std::string Be32(uint32_t v) {
  return {char(v >> 24), char(v >> 16), char(v >> 8), char(v)};
}

std::string Npy(const std::string& descr, const std::string& shape, const std::string& data) {
  std::string h = "{'descr': '" + descr + "', 'fortran_order': False, 'shape': (" + shape + "), }";
  while ((10 + h.size() + 1) % 64) h += ' ';
  h += '\n';
  std::string out = "\x93NUMPY\x01";
  out += '\0';
  out += char(h.size() & 0xff);
  out += char(h.size() >> 8);
  return out + h + data;
}

class IngestTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto s = OpenObjectStore("file://" + dir_.path() + "/ds");
    ASSERT_TRUE(s.ok());
    store_ = std::move(s).value();
  }
  // Another dataset location (an existing dataset is never overwritten).
  ObjectStore& Fresh(const std::string& name) {
    auto s = OpenObjectStore("file://" + dir_.path() + "/" + name);
    EXPECT_TRUE(s.ok()) << s.status().ToString();
    others_.push_back(std::move(s).value());
    return *others_.back();
  }
  TempDir dir_;
  std::unique_ptr<ObjectStore> store_;
  std::vector<std::unique_ptr<ObjectStore>> others_;
};

TEST_F(IngestTest, TextBecomesByteTokenWindows) {
  std::string text;
  for (int i = 0; i < 1000; ++i) text += char('a' + i % 26);
  WriteFile(dir_.path() + "/t.txt", text);
  uint64_t last_done = 0;
  auto idx = IngestDataset(dir_.path() + "/t.txt", *store_,
                           {.window = 10, .progress = [&](uint64_t d, uint64_t) { last_done = d; }});
  ASSERT_TRUE(idx.ok()) << idx.status().ToString();
  EXPECT_EQ(last_done, 1000u);
  EXPECT_EQ(idx->TotalRecords(), 100u);
  EXPECT_EQ(idx->layout.dtype, DType::kU16);
  EXPECT_EQ(idx->layout.vocab, 256);
  auto loader = DatasetLoader::Open("file://" + dir_.path() + "/ds", {.batch = 1, .shuffle = false});
  ASSERT_TRUE(loader.ok()) << loader.status().ToString();
  std::vector<std::byte> rec((*loader)->batch_bytes());
  ASSERT_TRUE((*loader)->Next(rec).ok());
  int32_t tokens[10];
  ASSERT_TRUE(DecodeTokens(idx->layout, rec, tokens).ok());
  EXPECT_EQ(tokens[0], 'a');
  EXPECT_EQ(tokens[9], 'j');
}

// Ingesting where a dataset already is fails naming it, and the dataset is left as it was
// (its shards used to be rewritten in place before the new index).
TEST_F(IngestTest, AnExistingDatasetIsNeverOverwritten) {
  std::string text(1000, 'a');
  WriteFile(dir_.path() + "/a.txt", text);
  WriteFile(dir_.path() + "/b.txt", std::string(1000, 'b'));
  ASSERT_TRUE(IngestDataset(dir_.path() + "/a.txt", *store_, {.window = 10}).ok());
  auto before = store_->GetAll("index.json");
  ASSERT_TRUE(before.ok());
  auto again = IngestDataset(dir_.path() + "/b.txt", *store_, {.window = 10});
  EXPECT_EQ(again.status().code(), StatusCode::kAlreadyExists) << again.status().ToString();
  EXPECT_NE(again.status().ToString().find("index.json"), std::string::npos);
  EXPECT_EQ(*store_->GetAll("index.json"), *before);
  auto loader = DatasetLoader::Open("file://" + dir_.path() + "/ds", {.batch = 1, .shuffle = false});
  ASSERT_TRUE(loader.ok()) << loader.status().ToString();
  std::vector<std::byte> rec((*loader)->batch_bytes());
  ASSERT_TRUE((*loader)->Next(rec).ok());
  EXPECT_EQ(char(rec[0]), 'a') << "the old dataset's records";
}

TEST_F(IngestTest, TokenFilesKeepTheirWidthAndRejectBadLengths) {
  std::string u32(4 * 64, '\0');
  for (uint32_t i = 0; i < 64; ++i) {
    uint32_t id = 65536 + i;  // does not fit u16
    std::memcpy(&u32[4 * i], &id, 4);
  }
  WriteFile(dir_.path() + "/a.bin", u32);
  auto idx = IngestDataset(dir_.path() + "/a.bin", *store_, {.format = "tokens_u32", .window = 8});
  ASSERT_TRUE(idx.ok()) << idx.status().ToString();
  EXPECT_EQ(idx->TotalRecords(), 8u);
  EXPECT_EQ(idx->layout.vocab, 65536 + 64);
  auto bad = IngestDataset(dir_.path() + "/a.bin", Fresh("u16"), {.format = "tokens_u16", .window = 8});
  EXPECT_TRUE(bad.ok()) << "u16 reading of an even-sized file is legal";
  WriteFile(dir_.path() + "/odd.bin", std::string(7, 'x'));
  bad = IngestDataset(dir_.path() + "/odd.bin", *store_, {.format = "tokens_u32", .window = 2});
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
  bad = IngestDataset(dir_.path() + "/missing.bin", *store_, {});
  EXPECT_EQ(bad.status().code(), StatusCode::kNotFound);
  bad = IngestDataset(dir_.path() + "/a.bin", *store_, {.format = "parquet"});
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
  // A FIFO would block the read forever (nobody writes it): refused at once.
  const std::string fifo = dir_.path() + "/fifo.bin";
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
  bad = IngestDataset(fifo, Fresh("fifo"), {.format = "tokens_u16", .window = 2});
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument) << bad.status().ToString();
  EXPECT_NE(bad.status().message().find("not a regular file"), std::string::npos);
}

TEST_F(IngestTest, MnistIdxBecomesLabelledImages) {
  const uint32_t n = 30;
  std::string images = Be32(0x803) + Be32(n) + Be32(28) + Be32(28), labels = Be32(0x801) + Be32(n);
  for (uint32_t i = 0; i < n; ++i) {
    images += std::string(784, char(i));
    labels += char(i % 10);
  }
  WriteFile(dir_.path() + "/train-images-idx3-ubyte", images);
  WriteFile(dir_.path() + "/train-labels-idx1-ubyte", labels);
  auto idx = IngestDataset(dir_.path(), *store_, {.format = "mnist"});
  ASSERT_TRUE(idx.ok()) << idx.status().ToString();
  EXPECT_EQ(idx->TotalRecords(), n);
  EXPECT_EQ(idx->layout.shape, (std::vector<int64_t>{1, 28, 28}));
  EXPECT_EQ(idx->layout.classes, 10);
  auto rec = store_->GetAll(idx->shards[0].key);
  ASSERT_TRUE(rec.ok());
  std::vector<float> x(784);
  int32_t y = -1;
  auto bytes = std::as_bytes(std::span<const char>(*rec)).subspan(13 * idx->layout.RecordBytes(), idx->layout.RecordBytes());
  ASSERT_TRUE(DecodeTensors(idx->layout, bytes, x.data(), &y).ok());
  EXPECT_EQ(y, 3);
  EXPECT_FLOAT_EQ(x[100], 13.0f / 255.0f);
  WriteFile(dir_.path() + "/train-labels-idx1-ubyte", Be32(0x801) + Be32(n - 1));
  EXPECT_EQ(IngestDataset(dir_.path(), *store_, {.format = "mnist"}).status().code(), StatusCode::kInvalidArgument);
}

TEST_F(IngestTest, NpyTokensAndLabelledTensors) {
  std::string tokens(8 * 40, '\0');
  for (int64_t i = 0; i < 40; ++i) std::memcpy(&tokens[8 * i], &i, 8);
  WriteFile(dir_.path() + "/tok.npy", Npy("<i8", "40,", tokens));
  auto idx = IngestDataset(dir_.path() + "/tok.npy", *store_, {.window = 5});
  ASSERT_TRUE(idx.ok()) << idx.status().ToString();
  EXPECT_EQ(idx->TotalRecords(), 8u);
  EXPECT_EQ(idx->layout.dtype, DType::kU32);
  EXPECT_EQ(idx->layout.vocab, 40);

  std::string x(4 * 6 * 3, '\0'), y(4 * 6, '\0');
  for (int i = 0; i < 18; ++i) { float v = i * 0.5f; std::memcpy(&x[4 * i], &v, 4); }
  for (int32_t i = 0; i < 6; ++i) std::memcpy(&y[4 * i], &i, 4);
  WriteFile(dir_.path() + "/x.npy", Npy("<f4", "6, 3", x));
  WriteFile(dir_.path() + "/y.npy", Npy("<i4", "6,", y));
  EXPECT_EQ(IngestDataset(dir_.path() + "/x.npy", *store_, {}).status().code(), StatusCode::kInvalidArgument)
      << "tensors without --labels";
  ObjectStore& tensors = Fresh("tensors");
  idx = IngestDataset(dir_.path() + "/x.npy", tensors, {.labels = dir_.path() + "/y.npy"});
  ASSERT_TRUE(idx.ok()) << idx.status().ToString();
  EXPECT_EQ(idx->layout.kind, RecordKind::kTensors);
  EXPECT_EQ(idx->layout.shape, std::vector<int64_t>{3});
  auto shard = tensors.GetAll(idx->shards[0].key);
  ASSERT_TRUE(shard.ok());
  float xs[6 * 3];
  int32_t ys[6];
  ASSERT_TRUE(DecodeTensors(idx->layout, std::as_bytes(std::span<const char>(*shard)), xs, ys).ok());
  EXPECT_FLOAT_EQ(xs[7], 3.5f);
  EXPECT_EQ(ys[5], 5);
  std::string neg(8 * 4, '\0');
  neg.replace(16, 8, std::string(8, '\xff'));  // tokens 0, 0, -1, 0
  WriteFile(dir_.path() + "/neg.npy", Npy("<i8", "4,", neg));
  auto st = IngestDataset(dir_.path() + "/neg.npy", Fresh("neg"), {.window = 2}).status();
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("negative"), std::string::npos) << st.message();
}

}  // namespace
}  // namespace gantry::storage::testing
