// Dataset index (JSON), shard writer, verifier and record decoders.
#include "storage/dataset.h"

#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>

#include "storage/checksum.h"

namespace gantry::storage {
namespace {

using nlohmann::json;

std::string ShardKey(size_t i) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "shard-%05zu.bin", i);
  return buf;
}

uint32_t ParseCrc(const json& j) { return static_cast<uint32_t>(std::stoul(j.get<std::string>(), nullptr, 16)); }

}  // namespace

std::string_view DTypeName(DType t) {
  switch (t) {
    case DType::kU8: return "u8";
    case DType::kU16: return "u16";
    case DType::kU32: return "u32";
    case DType::kI32: return "i32";
    case DType::kF32: return "f32";
  }
  return "?";
}

StatusOr<DType> ParseDType(std::string_view name) {
  for (DType t : {DType::kU8, DType::kU16, DType::kU32, DType::kI32, DType::kF32}) {
    if (DTypeName(t) == name) return t;
  }
  return InvalidArgumentError("unknown dtype '" + std::string(name) + "'; use u8, u16, u32, i32 or f32");
}

int DTypeBytes(DType t) { return t == DType::kU8 ? 1 : t == DType::kU16 ? 2 : 4; }

int64_t RecordLayout::SampleElements() const {
  if (kind == RecordKind::kTokens) return window;
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

uint64_t RecordLayout::RecordBytes() const {
  uint64_t b = static_cast<uint64_t>(SampleElements()) * DTypeBytes(dtype);
  return kind == RecordKind::kTensors ? b + 4 : b;
}

Status RecordLayout::Validate() const {
  if (kind == RecordKind::kTokens) {
    if (dtype != DType::kU16 && dtype != DType::kU32) return InvalidArgumentError("token datasets store u16 or u32 tokens, not " + std::string(DTypeName(dtype)));
    if (window < 2) return InvalidArgumentError("token window must be >= 2 (context + 1), got " + std::to_string(window));
    if (window > kMaxRecordBytes / DTypeBytes(dtype))
      return InvalidArgumentError("token window " + std::to_string(window) + " is too large: one record would exceed " +
                                  std::to_string(kMaxRecordBytes) + " bytes");
    return OkStatus();
  }
  if (dtype != DType::kU8 && dtype != DType::kF32) return InvalidArgumentError("tensor datasets store u8 or f32 samples, not " + std::string(DTypeName(dtype)));
  if (shape.empty()) return InvalidArgumentError("tensor dataset needs a sample shape");
  int64_t elements = 1;
  for (int64_t d : shape) {
    if (d <= 0) return InvalidArgumentError("tensor sample shape has a dimension <= 0");
    if (elements > kMaxRecordBytes / d)
      return InvalidArgumentError("tensor sample shape is too large: one record would exceed " +
                                  std::to_string(kMaxRecordBytes) + " bytes");
    elements *= d;
  }
  if (elements > kMaxRecordBytes / DTypeBytes(dtype) - 4)
    return InvalidArgumentError("tensor sample shape is too large: one record would exceed " +
                                std::to_string(kMaxRecordBytes) + " bytes");
  return OkStatus();
}

uint64_t DatasetIndex::TotalRecords() const {
  uint64_t n = 0;
  for (const auto& s : shards) n += s.records;
  return n;
}

uint64_t DatasetIndex::TotalBytes() const {
  uint64_t n = 0;
  for (const auto& s : shards) n += s.bytes;
  return n;
}

std::string DatasetIndex::ToJson() const {
  json j;
  j["format"] = "gantry-dataset";
  j["version"] = version;
  json l;
  l["kind"] = layout.kind == RecordKind::kTokens ? "tokens" : "tensors";
  l["dtype"] = std::string(DTypeName(layout.dtype));
  l["record_bytes"] = layout.RecordBytes();
  if (layout.kind == RecordKind::kTokens) {
    l["window"] = layout.window;
    l["vocab"] = layout.vocab;
  } else {
    l["shape"] = layout.shape;
    l["label_dtype"] = "i32";
    l["classes"] = layout.classes;
  }
  j["layout"] = l;
  j["chunk_records"] = chunk_records;
  j["total_records"] = TotalRecords();
  j["source"] = source;
  j["shards"] = json::array();
  for (const auto& s : shards) {
    json cs = json::array();
    for (uint32_t c : s.chunk_crc) cs.push_back(Crc32cHex(c));
    j["shards"].push_back({{"key", s.key}, {"records", s.records}, {"bytes", s.bytes},
                           {"crc32c", Crc32cHex(s.crc32c)}, {"chunk_crc32c", cs}});
  }
  return j.dump(1);
}

StatusOr<DatasetIndex> DatasetIndex::FromJson(std::string_view text, const std::string& where) {
  DatasetIndex idx;
  try {
    json j = json::parse(text);
    if (j.value("format", "") != "gantry-dataset") {
      return InvalidArgumentError(where + " is not a gantry dataset index (format field missing)");
    }
    idx.version = j.at("version").get<int>();
    if (idx.version != kDatasetFormatVersion) {
      return FailedPreconditionError(where + ": dataset format version " + std::to_string(idx.version) +
                                     " is not supported (this gantry reads " +
                                     std::to_string(kDatasetFormatVersion) + "); re-ingest or upgrade");
    }
    const json& l = j.at("layout");
    idx.layout.kind = l.at("kind") == "tokens" ? RecordKind::kTokens : RecordKind::kTensors;
    GANTRY_ASSIGN_OR_RETURN(idx.layout.dtype, ParseDType(l.at("dtype").get<std::string>()));
    if (idx.layout.kind == RecordKind::kTokens) {
      idx.layout.window = l.at("window").get<int64_t>();
      idx.layout.vocab = l.value("vocab", int64_t{0});
    } else {
      idx.layout.shape = l.at("shape").get<std::vector<int64_t>>();
      idx.layout.classes = l.value("classes", int64_t{0});
    }
    GANTRY_RETURN_IF_ERROR(idx.layout.Validate().Prepend(where));
    idx.chunk_records = j.at("chunk_records").get<uint64_t>();
    const uint64_t rb = idx.layout.RecordBytes();  // <= kMaxRecordBytes: validated above
    if (idx.chunk_records > kMaxChunkBytes / rb) {
      return DataLossError(where + ": chunk_records " + std::to_string(idx.chunk_records) + " makes chunks of over " +
                           std::to_string(kMaxChunkBytes) + " bytes; the index is damaged, re-ingest");
    }
    idx.source = j.value("source", "");
    for (const json& s : j.at("shards")) {
      ShardInfo si;
      si.key = s.at("key").get<std::string>();
      si.records = s.at("records").get<uint64_t>();
      si.bytes = s.at("bytes").get<uint64_t>();
      si.crc32c = ParseCrc(s.at("crc32c"));
      for (const json& c : s.at("chunk_crc32c")) si.chunk_crc.push_back(ParseCrc(c));
      uint64_t want_chunks = idx.chunk_records ? (si.records + idx.chunk_records - 1) / idx.chunk_records : 0;
      if (si.records > (uint64_t{1} << 62) / rb || si.bytes != si.records * rb ||
          si.chunk_crc.size() != want_chunks) {
        return DataLossError(where + ": shard " + si.key + " entry is inconsistent (bytes, records "
                             "and chunk checksums disagree); the index is damaged, re-ingest");
      }
      idx.shards.push_back(std::move(si));
    }
    if (idx.chunk_records == 0) return DataLossError(where + ": chunk_records is 0; the index is damaged");
  } catch (const std::exception& e) {
    return DataLossError(where + ": cannot parse the dataset index: " + e.what());
  }
  return idx;
}

DatasetWriter::DatasetWriter(ObjectStore* store, DatasetIndex index, uint64_t shard_records)
    : store_(store), index_(std::move(index)), shard_records_(shard_records),
      buf_(shard_records * index_.layout.RecordBytes()) {}

StatusOr<std::unique_ptr<DatasetWriter>> DatasetWriter::Create(ObjectStore* store, RecordLayout layout,
                                                               DatasetWriterOptions options) {
  GANTRY_RETURN_IF_ERROR(layout.Validate());
  // Never over an existing dataset: its shards would be rewritten in place before the new
  // index, so a failed or concurrent ingest (or a trainer reading it) would see a broken mix.
  auto existing = store->Size(kDatasetIndexKey);
  if (existing.ok()) {
    return AlreadyExistsError("a dataset already exists at " + store->Describe() + "/" +
                              kDatasetIndexKey + "; nothing was overwritten (write to a new "
                              "location, or remove the old dataset first)");
  }
  if (existing.status().code() != StatusCode::kNotFound) return existing.status();
  const uint64_t rb = layout.RecordBytes();
  DatasetIndex index;
  index.layout = std::move(layout);
  index.source = options.source;
  index.chunk_records = std::max<uint64_t>(1, options.chunk_bytes / rb);
  uint64_t chunks_per_shard = std::max<uint64_t>(1, options.shard_bytes / (index.chunk_records * rb));
  return std::unique_ptr<DatasetWriter>(
      new DatasetWriter(store, std::move(index), chunks_per_shard * index.chunk_records));
}

Status DatasetWriter::Append(std::span<const std::byte> records) {
  const uint64_t rb = index_.layout.RecordBytes();
  if (finished_) return FailedPreconditionError("dataset writer: Append after Finish");
  if (records.size() % rb != 0) {
    return InvalidArgumentError("dataset writer: " + std::to_string(records.size()) +
                                " bytes is not a whole number of " + std::to_string(rb) + "-byte records");
  }
  while (!records.empty()) {
    uint64_t take = std::min<uint64_t>(records.size() / rb, shard_records_ - buffered_);
    std::memcpy(buf_.data() + buffered_ * rb, records.data(), take * rb);
    buffered_ += take;
    records_ += take;
    records = records.subspan(take * rb);
    if (buffered_ == shard_records_) GANTRY_RETURN_IF_ERROR(FlushShard());
  }
  return OkStatus();
}

Status DatasetWriter::FlushShard() {
  if (buffered_ == 0) return OkStatus();
  const uint64_t rb = index_.layout.RecordBytes();
  ShardInfo s;
  s.key = ShardKey(index_.shards.size());
  s.records = buffered_;
  s.bytes = buffered_ * rb;
  auto data = std::span<const std::byte>(buf_.data(), s.bytes);
  s.crc32c = Crc32c(data);
  for (uint64_t r = 0; r < buffered_; r += index_.chunk_records) {
    uint64_t n = std::min(index_.chunk_records, buffered_ - r);
    s.chunk_crc.push_back(Crc32c(data.subspan(r * rb, n * rb)));
  }
  GANTRY_RETURN_IF_ERROR(store_->Put(s.key, data));
  index_.shards.push_back(std::move(s));
  buffered_ = 0;
  return OkStatus();
}

StatusOr<DatasetIndex> DatasetWriter::Finish() {
  if (finished_) return FailedPreconditionError("dataset writer: Finish called twice");
  if (records_ == 0) return InvalidArgumentError("dataset writer: no records were appended; the source is empty or too short for one record");
  GANTRY_RETURN_IF_ERROR(FlushShard());
  finished_ = true;
  GANTRY_RETURN_IF_ERROR(store_->Put(kDatasetIndexKey, index_.ToJson()));  // last: commits
  return index_;
}

StatusOr<DatasetIndex> ReadDatasetIndex(ObjectStore& store) {
  auto text = store.GetAll(kDatasetIndexKey);
  if (!text.ok() && text.status().code() == StatusCode::kNotFound) {
    return NotFoundError(store.Describe() + " holds no dataset (no " + kDatasetIndexKey +
                         "); ingest one with `gantry dataset put SRC " + store.Describe() + "`");
  }
  if (!text.ok()) return text.status();
  return DatasetIndex::FromJson(*text, store.Describe() + "/" + kDatasetIndexKey);
}

Status VerifyDataset(ObjectStore& store, const DatasetIndex& index,
                     const std::function<void(uint64_t)>& progress) {
  const uint64_t rb = index.layout.RecordBytes();
  std::vector<std::byte> buf;
  uint64_t done = 0;
  for (const auto& s : index.shards) {
    const std::string where = store.Describe() + "/" + s.key;
    buf.resize(s.bytes + 1);  // one extra byte detects a shard longer than the index says
    GANTRY_ASSIGN_OR_RETURN(uint64_t got, store.Get(s.key, 0, buf));
    if (got != s.bytes) {
      return DataLossError("dataset shard " + where + " has " + std::to_string(got) +
                           " bytes, the index says " + std::to_string(s.bytes) + "; re-ingest");
    }
    auto data = std::span<const std::byte>(buf.data(), s.bytes);
    for (size_t c = 0; c < s.chunk_crc.size(); ++c) {
      uint64_t first = c * index.chunk_records;
      uint64_t n = std::min(index.chunk_records, s.records - first);
      if (Crc32c(data.subspan(first * rb, n * rb)) != s.chunk_crc[c]) {
        return DataLossError("dataset shard " + where + " chunk " + std::to_string(c) + " (records " +
                             std::to_string(first) + ".." + std::to_string(first + n - 1) +
                             ") fails its CRC-32C; the shard is corrupt, re-ingest");
      }
    }
    if (Crc32c(data) != s.crc32c) {
      return DataLossError("dataset shard " + where + " fails its CRC-32C; re-ingest");
    }
    done += s.bytes;
    if (progress) progress(done);
  }
  return OkStatus();
}

Status DecodeTokens(const RecordLayout& layout, std::span<const std::byte> records, int32_t* out,
                    size_t* bad_record) {
  if (layout.kind != RecordKind::kTokens) return InvalidArgumentError("DecodeTokens on a tensor dataset");
  const size_t n = records.size() / DTypeBytes(layout.dtype);
  if (layout.dtype == DType::kU16) {
    for (size_t i = 0; i < n; ++i) {
      uint16_t v;
      std::memcpy(&v, records.data() + 2 * i, 2);
      out[i] = v;
    }
  } else {
    for (size_t i = 0; i < n; ++i) {
      uint32_t v;
      std::memcpy(&v, records.data() + 4 * i, 4);
      if (v > INT32_MAX) {
        if (bad_record) *bad_record = i / static_cast<size_t>(layout.window);
        return DataLossError("token id " + std::to_string(v) + " does not fit int32");
      }
      out[i] = static_cast<int32_t>(v);
    }
  }
  return OkStatus();
}

Status DecodeTensors(const RecordLayout& layout, std::span<const std::byte> records, float* x,
                     int32_t* labels) {
  if (layout.kind != RecordKind::kTensors) return InvalidArgumentError("DecodeTensors on a token dataset");
  const uint64_t rb = layout.RecordBytes();
  const int64_t el = layout.SampleElements();
  for (size_t r = 0; r < records.size() / rb; ++r) {
    const std::byte* p = records.data() + r * rb;
    if (layout.dtype == DType::kU8) {
      for (int64_t i = 0; i < el; ++i) x[r * el + i] = static_cast<float>(static_cast<uint8_t>(p[i])) * (1.0f / 255.0f);
    } else {
      std::memcpy(x + r * el, p, el * 4);
    }
    std::memcpy(labels + r, p + el * DTypeBytes(layout.dtype), 4);
  }
  return OkStatus();
}

}  // namespace gantry::storage
