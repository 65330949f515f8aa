// Datasets in an ObjectStore: shard objects of fixed-size records plus one index object
// (index.json: format version, record layout, per-shard record count and CRC-32C, and a
// CRC-32C per chunk of `chunk_records` records so readers can verify exactly what they read).
// Layouts: token windows (u16/u32) for language models; labelled fixed-shape tensors
// (u8/f32 sample + int32 label) for classifiers. The index is written last: a dataset without
// one is incomplete. Reading is storage/loader.h; ingesting files is storage/dataset_ingest.h.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "storage/object_store.h"

namespace gantry::storage {

inline constexpr int kDatasetFormatVersion = 1;
// Bounds an index must respect (a damaged one must not size buffers): one record, one chunk.
inline constexpr int64_t kMaxRecordBytes = int64_t{1} << 30;
inline constexpr uint64_t kMaxChunkBytes = uint64_t{1} << 30;
inline constexpr const char* kDatasetIndexKey = "index.json";

enum class RecordKind { kTokens, kTensors };
enum class DType { kU8, kU16, kU32, kI32, kF32 };
std::string_view DTypeName(DType t);  // "u8" | "u16" | "u32" | "i32" | "f32"
StatusOr<DType> ParseDType(std::string_view name);
int DTypeBytes(DType t);

struct RecordLayout {
  RecordKind kind = RecordKind::kTokens;
  DType dtype = DType::kU16;   // tokens: u16 | u32; tensors: u8 | f32 (sample elements)
  int64_t window = 0;          // tokens per record (context + 1 for next-token targets)
  std::vector<int64_t> shape;  // tensors: sample shape, e.g. {1, 28, 28}; a label (i32) follows
  int64_t vocab = 0;           // tokens: max token id + 1 seen at ingest (informational)
  int64_t classes = 0;         // tensors: max label + 1 seen at ingest (informational)
  int64_t SampleElements() const;  // window, or product of shape
  uint64_t RecordBytes() const;    // tokens: window*size; tensors: elements*size + 4
  Status Validate() const;
};

struct ShardInfo {
  std::string key;  // relative to the dataset root, e.g. "shard-00003.bin"
  uint64_t records = 0;
  uint64_t bytes = 0;
  uint32_t crc32c = 0;               // of the whole shard
  std::vector<uint32_t> chunk_crc;   // of each chunk of chunk_records records
};

struct DatasetIndex {
  int version = kDatasetFormatVersion;
  RecordLayout layout;
  uint64_t chunk_records = 0;
  std::vector<ShardInfo> shards;
  std::string source;  // what it was made from, for `gantry dataset info`

  uint64_t TotalRecords() const;
  uint64_t TotalBytes() const;
  std::string ToJson() const;
  // `where` names the object in errors (e.g. "ceph://pool/ds/index.json").
  static StatusOr<DatasetIndex> FromJson(std::string_view json, const std::string& where);
};

struct DatasetWriterOptions {
  uint64_t shard_bytes = 64ull << 20;  // target shard size (whole chunks)
  uint64_t chunk_bytes = 4ull << 20;   // target checksum/read/shuffle unit
  std::string source;
};

// Streams records into shards. Single-threaded. Buffers one shard (allocated once).
class DatasetWriter {
 public:
  static StatusOr<std::unique_ptr<DatasetWriter>> Create(ObjectStore* store, RecordLayout layout,
                                                         DatasetWriterOptions options);
  // Appends whole records (size a multiple of RecordBytes()).
  Status Append(std::span<const std::byte> records);
  // Writes the last shard, then the index. The writer is done afterwards.
  StatusOr<DatasetIndex> Finish();
  uint64_t records() const { return records_; }
  // Informational fields kept up to date by ingest (vocab/classes).
  RecordLayout& layout() { return index_.layout; }

 private:
  DatasetWriter(ObjectStore* store, DatasetIndex index, uint64_t shard_records);
  Status FlushShard();

  ObjectStore* store_;
  DatasetIndex index_;
  uint64_t shard_records_;
  std::vector<std::byte> buf_;
  uint64_t buffered_ = 0;  // records in buf_
  uint64_t records_ = 0;
  bool finished_ = false;
};

StatusOr<DatasetIndex> ReadDatasetIndex(ObjectStore& store);

// Reads every shard and checks its size, shard CRC and chunk CRCs. The first mismatch is a
// DataLoss error naming the shard key. `progress(bytes_done)` is called after each shard.
Status VerifyDataset(ObjectStore& store, const DatasetIndex& index,
                     const std::function<void(uint64_t)>& progress = {});

// Decoding for trainers. Tokens: `records` -> n*window int32 ids. Tensors: -> n*elements
// floats (u8 scaled to [0, 1]) and n int32 labels.
// A token above INT32_MAX is DataLoss; `bad_record` (optional) gets the index of its record.
Status DecodeTokens(const RecordLayout& layout, std::span<const std::byte> records, int32_t* out,
                    size_t* bad_record = nullptr);
Status DecodeTensors(const RecordLayout& layout, std::span<const std::byte> records, float* x,
                     int32_t* labels);

}  // namespace gantry::storage
