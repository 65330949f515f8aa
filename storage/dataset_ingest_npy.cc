// .npy ingest: 1-D integer arrays become token windows; N-D u8/f32 arrays plus a labels
// array become labelled tensors. Only little-endian, C-order arrays (numpy's default).
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>

#include "base/npy.h"
#include "storage/dataset_ingest.h"

namespace gantry::storage {

StatusOr<DatasetIndex> IngestTokenRange(const std::string& src, ObjectStore& dst, const IngestOptions& o,
                                        DType dtype, int in_size, bool in_signed, uint64_t offset,
                                        uint64_t bytes);

namespace {

StatusOr<DatasetIndex> IngestNpyTensors(const std::string& src, const NpyHeader& x, ObjectStore& dst,
                                        const IngestOptions& o) {
  if (o.labels.empty()) return InvalidArgumentError(src + " is a " + std::to_string(x.shape.size()) + "-D array: pass --labels LABELS.npy (1-D, one int per sample)");
  GANTRY_ASSIGN_OR_RETURN(NpyHeader y, ReadNpyHeader(o.labels));
  if (y.shape.size() != 1 || y.shape[0] != x.shape[0] || y.kind == 'f') {
    return InvalidArgumentError(o.labels + " must be a 1-D integer array of " + std::to_string(x.shape[0]) + " labels");
  }
  const bool u8 = x.kind == 'u' && x.item == 1;
  if (!u8 && !(x.kind == 'f' && x.item == 4)) return InvalidArgumentError(src + ": samples must be uint8 or float32");
  RecordLayout layout{.kind = RecordKind::kTensors, .dtype = u8 ? DType::kU8 : DType::kF32,
                      .shape = std::vector<int64_t>(x.shape.begin() + 1, x.shape.end())};
  const uint64_t n = x.shape[0], sample = layout.SampleElements() * x.item, rb = layout.RecordBytes();
  DatasetWriterOptions wo;
  wo.shard_bytes = o.shard_bytes ? o.shard_bytes : 64ull << 20;
  wo.chunk_bytes = o.chunk_bytes ? o.chunk_bytes : std::clamp<uint64_t>(n * rb / 64, 4096, 4ull << 20);
  wo.source = src;
  GANTRY_ASSIGN_OR_RETURN(auto w, DatasetWriter::Create(&dst, layout, wo));
  std::unique_ptr<FILE, int (*)(FILE*)> fx(std::fopen(src.c_str(), "rb"), std::fclose), fy(std::fopen(o.labels.c_str(), "rb"), std::fclose);
  if (!fx || !fy) return ErrnoError("open " + src + " / " + o.labels, errno);
  std::fseek(fx.get(), static_cast<long>(x.data_offset), SEEK_SET);
  std::fseek(fy.get(), static_cast<long>(y.data_offset), SEEK_SET);
  const uint64_t per = std::max<uint64_t>(1, (8 << 20) / rb);
  std::vector<std::byte> recs(per * rb);
  int64_t max_label = 0;
  for (uint64_t i = 0; i < n; i += per) {
    const uint64_t m = std::min(per, n - i);
    for (uint64_t r = 0; r < m; ++r) {
      int64_t label = 0;
      if (std::fread(recs.data() + r * rb, 1, sample, fx.get()) != sample || std::fread(&label, 1, y.item, fy.get()) != static_cast<size_t>(y.item)) {
        return DataLossError(src + " / " + o.labels + " ended early");
      }
      if (y.kind == 'i' && y.item < 8 && (label >> (8 * y.item - 1)) & 1) label |= ~((int64_t{1} << (8 * y.item)) - 1);
      if (label < 0 || label > INT32_MAX) return InvalidArgumentError(o.labels + ": label " + std::to_string(label) + " of sample " + std::to_string(i + r) + " is not in 0..2^31-1");
      max_label = std::max(max_label, label);
      int32_t l32 = static_cast<int32_t>(label);
      std::memcpy(recs.data() + r * rb + sample, &l32, 4);
    }
    GANTRY_RETURN_IF_ERROR(w->Append(std::span<const std::byte>(recs.data(), m * rb)));
    if (o.progress) o.progress(i + m, n);
  }
  w->layout().classes = max_label + 1;
  return w->Finish();
}

}  // namespace

StatusOr<DatasetIndex> IngestNpy(const std::string& src, ObjectStore& dst, const IngestOptions& o) {
  GANTRY_ASSIGN_OR_RETURN(NpyHeader h, ReadNpyHeader(src));
  if (h.shape.size() >= 2) return IngestNpyTensors(src, h, dst, o);
  if (h.kind == 'f') return InvalidArgumentError(src + " is a 1-D float array; token arrays must be integers");
  // 8/16-bit ints fit u16; wider ones are stored as u32 (range-checked while copying).
  DType out = h.item <= 2 ? DType::kU16 : DType::kU32;
  return IngestTokenRange(src, dst, o, out, h.item, h.kind == 'i', h.data_offset, h.data_bytes);
}

}  // namespace gantry::storage
