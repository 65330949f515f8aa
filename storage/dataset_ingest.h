// Ingest: turns local files into a dataset (storage/dataset.h) in any ObjectStore.
// Sources: raw token files (u16/u32 little-endian), text (bytes as u16 tokens, vocab 256),
// MNIST idx (images file or its directory; labels file beside it), .npy (1-D integer array
// -> tokens; N-D u8/f32 array + labels .npy -> labelled tensors). Streams the source through
// one reused buffer, so the source may be larger than memory. Behind `gantry dataset put`.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "storage/dataset.h"

namespace gantry::storage {

struct IngestOptions {
  // "" = infer from the name: *.npy -> npy, *idx3-ubyte or a directory -> mnist,
  // *.txt/*.text -> text, else tokens_u16. Or: tokens_u16 | tokens_u32 | text | mnist | npy.
  std::string format;
  int64_t window = 129;       // tokens per record (context + 1)
  std::string labels;         // npy tensors: labels .npy; mnist: labels idx ("" = beside)
  uint64_t shard_bytes = 0;   // 0 = 64 MiB
  uint64_t chunk_bytes = 0;   // 0 = total/64 clamped to [4 KiB, 4 MiB] (spreads small sets)
  // Called as source bytes are consumed: (done, total).
  std::function<void(uint64_t, uint64_t)> progress;
};

// Writes the dataset for `src` into `dst` (index last) and returns its index.
StatusOr<DatasetIndex> IngestDataset(const std::string& src, ObjectStore& dst, const IngestOptions& options);

}  // namespace gantry::storage
