// DatasetLoader: the distributed, deterministic reader of a dataset (storage/dataset.h).
// Order: each epoch the chunks (index.chunk_records records each) are permuted from
// (seed, epoch); rank r takes every world-th chunk; its chunks are read in groups of
// `group_chunks` and the records of a group are permuted from (seed, epoch, rank, group).
// Every rank gets the same number of batches per epoch (the minimum over ranks; the rest of
// the epoch is dropped), so collectives never wait on a rank that ran out of data.
// A background thread prefetches `prefetch_batches` batches ahead with async reads into
// buffers allocated once; every chunk is checked against its CRC-32C before use, and a bad
// one is a DataLoss error naming the shard key. The position (epoch, batch) is what a
// checkpoint stores; Seek() to it resumes with exactly the next unseen batch.
// Threading: one consumer thread calls Next/Seek/position; the loader owns its prefetch thread.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "storage/dataset.h"
#include "storage/object_store.h"

namespace gantry::storage {

struct LoaderOptions {
  uint64_t seed = 1;
  int rank = 0;
  int world = 1;
  int batch = 8;              // records per batch on this rank
  int prefetch_batches = 4;   // K batches ready ahead of Next()
  int group_chunks = 8;       // shuffle window and read unit, in chunks
  int group_buffers = 3;      // groups in memory: one being consumed, the rest being read
  bool shuffle = true;        // false: chunk and record order as stored (still rank-strided)
};

struct LoaderPosition {
  uint64_t epoch = 0;
  uint64_t batch = 0;  // index of the next batch within the epoch
  bool operator==(const LoaderPosition&) const = default;
  std::string ToString() const;  // "epoch:batch", e.g. "3:1207"
  static StatusOr<LoaderPosition> Parse(std::string_view text);
};

class DatasetLoader {
 public:
  // Opens the dataset at `uri` (reads its index).
  static StatusOr<std::unique_ptr<DatasetLoader>> Open(std::string_view uri, LoaderOptions options);
  // Uses an open store; the loader shares ownership.
  static StatusOr<std::unique_ptr<DatasetLoader>> Create(std::shared_ptr<ObjectStore> store,
                                                         DatasetIndex index, LoaderOptions options);
  ~DatasetLoader();

  const DatasetIndex& index() const;
  const RecordLayout& layout() const { return index().layout; }
  uint64_t batch_bytes() const;                     // batch * record bytes
  uint64_t BatchesInEpoch(uint64_t epoch) const;    // same on every rank and in every epoch

  // Copies the next batch (batch_bytes() bytes: `batch` records back to back) into dst and
  // advances the position (rolling into the next epoch). Blocks until it is ready. After an
  // error every later call returns it too, until Seek().
  Status Next(std::span<std::byte> dst);
  // Where row `row` of the batch the last Next() returned came from: "<store>/<shard key>
  // record N" (N counted within the shard), for errors about its content.
  std::string RecordOrigin(size_t row) const;
  // Position of the batch the next Next() returns.
  LoaderPosition position() const;
  // Continues from `pos` (a batch past the epoch's end means the next epoch's start).
  Status Seek(LoaderPosition pos);
  // Seconds Next() spent waiting for data (input stalls), since creation.
  double wait_seconds() const;

  class Impl;

 private:
  explicit DatasetLoader(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace gantry::storage
