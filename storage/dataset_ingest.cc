// Ingest of token, text, MNIST idx and .npy files into a dataset.
#include "storage/dataset_ingest.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>

namespace gantry::storage {
namespace {

namespace fs = std::filesystem;
constexpr size_t kBlockBytes = 8 << 20;

struct FileCloser {
  void operator()(FILE* f) const { std::fclose(f); }
};
using File = std::unique_ptr<FILE, FileCloser>;

StatusOr<File> OpenFile(const std::string& path) {
  FILE* f = std::fopen(path.c_str(), "rb");
  if (!f && errno == ENOENT) return NotFoundError("dataset source " + path + " does not exist");
  if (!f) return ErrnoError("open dataset source " + path, errno);
  return File(f);
}

uint64_t FileSize(const std::string& path) {
  std::error_code ec;
  auto n = fs::file_size(path, ec);
  return ec ? 0 : n;
}

uint32_t BigEndian32(const unsigned char* p) { return (p[0] << 24) | (p[1] << 16) | (p[2] << 8) | p[3]; }

DatasetWriterOptions WriterOptions(const IngestOptions& o, uint64_t total_bytes, const std::string& src) {
  DatasetWriterOptions w;
  w.shard_bytes = o.shard_bytes ? o.shard_bytes : 64ull << 20;
  w.chunk_bytes = o.chunk_bytes ? o.chunk_bytes : std::clamp<uint64_t>(total_bytes / 64, 4096, 4ull << 20);
  w.source = src;
  return w;
}

// Streams `in` (from its current offset, `bytes` long) as tokens of `in_size` bytes each,
// converted to `layout.dtype`, in windows. widen: text bytes -> u16.
Status IngestTokenStream(FILE* in, uint64_t bytes, int in_size, bool in_signed, DatasetWriter& w,
                         const IngestOptions& o, const std::string& src) {
  const RecordLayout& layout = w.layout();
  const int out_size = DTypeBytes(layout.dtype);
  const uint64_t rec_tokens = layout.window;
  std::vector<unsigned char> in_buf(kBlockBytes / in_size * in_size);
  std::vector<std::byte> out;
  out.reserve(in_buf.size() / in_size * out_size + rec_tokens * out_size);
  uint64_t done = 0, max_token = 0;
  while (done < bytes) {
    size_t want = std::min<uint64_t>(in_buf.size(), bytes - done);
    size_t got = std::fread(in_buf.data(), 1, want, in);
    if (got != want) return DataLossError("dataset source " + src + " ended early (read error or truncated file)");
    size_t used = out.size();
    out.resize(used + got / in_size * out_size);
    for (size_t i = 0; i + in_size <= got; i += in_size, used += out_size) {
      uint64_t t = 0;
      std::memcpy(&t, in_buf.data() + i, in_size);  // little-endian host
      if (in_signed && in_size < 8 && ((t >> (8 * in_size - 1)) & 1)) t = ~0ull;  // negative: rejected below
      if (t == ~0ull || (t >> (8 * out_size)) != 0) {
        return InvalidArgumentError("dataset source " + src + ": token " + std::to_string(t) + " at byte " +
                                    std::to_string(done + i) + " does not fit " + std::string(DTypeName(layout.dtype)) +
                                    " (negative, or use tokens_u32)");
      }
      max_token = std::max(max_token, t);
      std::memcpy(out.data() + used, &t, out_size);
    }
    done += got;
    const size_t whole = out.size() / (rec_tokens * out_size) * rec_tokens * out_size;
    GANTRY_RETURN_IF_ERROR(w.Append(std::span<const std::byte>(out.data(), whole)));
    out.erase(out.begin(), out.begin() + whole);
    if (o.progress) o.progress(done, bytes);
  }
  w.layout().vocab = static_cast<int64_t>(std::max<uint64_t>(max_token + 1, w.layout().vocab));
  return OkStatus();
}

StatusOr<DatasetIndex> IngestTokens(const std::string& src, ObjectStore& dst, const IngestOptions& o,
                                    DType dtype, int in_size, bool in_signed, uint64_t offset, uint64_t bytes) {
  if (o.window < 2) return InvalidArgumentError("--window must be >= 2 (context + 1), got " + std::to_string(o.window));
  if (bytes % in_size != 0) {
    return InvalidArgumentError("token file " + src + " has " + std::to_string(bytes) + " bytes, not a multiple of " +
                                std::to_string(in_size) + "; is the dtype right? (--format tokens_u16|tokens_u32)");
  }
  RecordLayout layout{.kind = RecordKind::kTokens, .dtype = dtype, .window = o.window};
  if (in_size == 1) layout.vocab = 256;
  GANTRY_ASSIGN_OR_RETURN(auto w, DatasetWriter::Create(&dst, layout, WriterOptions(o, bytes / in_size * DTypeBytes(dtype), src)));
  GANTRY_ASSIGN_OR_RETURN(File in, OpenFile(src));
  if (std::fseek(in.get(), static_cast<long>(offset), SEEK_SET) != 0) return ErrnoError("seek " + src, errno);
  GANTRY_RETURN_IF_ERROR(IngestTokenStream(in.get(), bytes, in_size, in_signed, *w, o, src));
  return w->Finish();
}

StatusOr<DatasetIndex> IngestMnist(std::string images, ObjectStore& dst, const IngestOptions& o) {
  if (fs::is_directory(images)) images = (fs::path(images) / "train-images-idx3-ubyte").string();
  std::string labels = o.labels;
  if (labels.empty()) {
    labels = images;
    auto pos = labels.rfind("images-idx3-ubyte");
    if (pos == std::string::npos) return InvalidArgumentError("cannot guess the labels file for " + images + "; pass --labels");
    labels.replace(pos, 17, "labels-idx1-ubyte");
  }
  GANTRY_ASSIGN_OR_RETURN(File fi, OpenFile(images));
  GANTRY_ASSIGN_OR_RETURN(File fl, OpenFile(labels));
  unsigned char hi[16], hl[8];
  if (std::fread(hi, 1, 16, fi.get()) != 16 || BigEndian32(hi) != 0x803) return InvalidArgumentError(images + " is not an MNIST idx3-ubyte images file (bad magic)");
  if (std::fread(hl, 1, 8, fl.get()) != 8 || BigEndian32(hl) != 0x801) return InvalidArgumentError(labels + " is not an MNIST idx1-ubyte labels file (bad magic)");
  const uint32_t n = BigEndian32(hi + 4), rows = BigEndian32(hi + 8), cols = BigEndian32(hi + 12);
  if (BigEndian32(hl + 4) != n) return InvalidArgumentError(images + " has " + std::to_string(n) + " images but " + labels + " has " + std::to_string(BigEndian32(hl + 4)) + " labels");
  if (FileSize(images) != 16 + uint64_t{n} * rows * cols) return DataLossError(images + " is truncated: header says " + std::to_string(n) + " images of " + std::to_string(rows) + "x" + std::to_string(cols));
  RecordLayout layout{.kind = RecordKind::kTensors, .dtype = DType::kU8, .shape = {1, rows, cols}};
  const uint64_t rb = layout.RecordBytes(), pixels = uint64_t{rows} * cols;
  GANTRY_ASSIGN_OR_RETURN(auto w, DatasetWriter::Create(&dst, layout, WriterOptions(o, n * rb, images)));
  const uint32_t per_block = std::max<uint64_t>(1, kBlockBytes / rb);
  std::vector<std::byte> recs(per_block * rb), img(per_block * pixels);
  std::vector<unsigned char> lab(per_block);
  int32_t max_label = 0;
  for (uint32_t i = 0; i < n; i += per_block) {
    const uint32_t m = std::min(per_block, n - i);
    if (std::fread(img.data(), pixels, m, fi.get()) != m || std::fread(lab.data(), 1, m, fl.get()) != m) {
      return DataLossError("MNIST files " + images + " / " + labels + " ended early");
    }
    for (uint32_t r = 0; r < m; ++r) {
      int32_t label = lab[r];
      max_label = std::max(max_label, label);
      std::memcpy(recs.data() + r * rb, img.data() + r * pixels, pixels);
      std::memcpy(recs.data() + r * rb + pixels, &label, 4);
    }
    GANTRY_RETURN_IF_ERROR(w->Append(std::span<const std::byte>(recs.data(), m * rb)));
    if (o.progress) o.progress(uint64_t{i + m} * pixels, uint64_t{n} * pixels);
  }
  w->layout().classes = max_label + 1;
  return w->Finish();
}

}  // namespace

// .npy support lives in dataset_ingest_npy.cc.
StatusOr<DatasetIndex> IngestNpy(const std::string& src, ObjectStore& dst, const IngestOptions& o);
StatusOr<DatasetIndex> IngestTokenRange(const std::string& src, ObjectStore& dst, const IngestOptions& o,
                                        DType dtype, int in_size, bool in_signed, uint64_t offset,
                                        uint64_t bytes) {
  return IngestTokens(src, dst, o, dtype, in_size, in_signed, offset, bytes);
}

StatusOr<DatasetIndex> IngestDataset(const std::string& src, ObjectStore& dst, const IngestOptions& o) {
  std::error_code ec;
  if (!fs::exists(src, ec)) return NotFoundError("dataset source " + src + " does not exist");
  std::string format = o.format;
  if (format.empty()) {
    if (src.ends_with(".npy")) format = "npy";
    else if (fs::is_directory(src) || src.ends_with("idx3-ubyte")) format = "mnist";
    else if (src.ends_with(".txt") || src.ends_with(".text")) format = "text";
    else format = "tokens_u16";
  }
  if (format != "mnist" && fs::is_directory(src)) return InvalidArgumentError(src + " is a directory; only MNIST (--format mnist) ingests a directory");
  // A FIFO, socket or device would block the read forever or never end: files only.
  for (const std::string& path : {src, o.labels}) {
    if (path.empty() || fs::is_directory(path, ec)) continue;
    if (!fs::exists(path, ec)) return NotFoundError("dataset source " + path + " does not exist");
    if (!fs::is_regular_file(path, ec)) {
      return InvalidArgumentError("dataset source " + path +
                                  " is not a regular file (a pipe, socket or device)");
    }
  }
  const uint64_t size = FileSize(src);
  if (format == "tokens_u16") return IngestTokens(src, dst, o, DType::kU16, 2, false, 0, size);
  if (format == "tokens_u32") return IngestTokens(src, dst, o, DType::kU32, 4, false, 0, size);
  if (format == "text") return IngestTokens(src, dst, o, DType::kU16, 1, false, 0, size);
  if (format == "mnist") return IngestMnist(src, dst, o);
  if (format == "npy") return IngestNpy(src, dst, o);
  return InvalidArgumentError("unknown dataset format '" + format + "'; use tokens_u16, tokens_u32, text, mnist or npy");
}

}  // namespace gantry::storage
