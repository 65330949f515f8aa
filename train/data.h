// Training data: a DataSource delivers fixed-size batches in a deterministic order fixed by
// (seed, epoch, rank, world), and can report and restore its position (checkpoints carry it,
// so a resumed run continues with the next unseen batch). Sources: token files (uint16/uint32),
// text files (bytes as tokens), MNIST idx files, labelled .npy tensors, `synthetic`
// (docs/data.md), and datasets made by `gantry dataset put` (ceph:// or a file:// directory
// with index.json), read by storage::DatasetLoader (train/data_dataset.h). The interface is small so a distributed loader (storage/) can replace it.
// Not thread-safe; one source per rank.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "base/job_spec.h"
#include "base/status.h"
#include "train/model.h"

namespace gantry::train {

// Where the next batch comes from: batch `batch` (0-based) of epoch `epoch`.
struct DataPosition {
  uint64_t epoch = 0;
  uint64_t batch = 0;
  bool operator==(const DataPosition&) const = default;
};

struct DataOptions {
  int batch = 8;      // records per batch (per rank)
  uint64_t seed = 1;  // fixes synthetic content and every epoch's order
  int rank = 0;       // this rank takes records rank, rank + world, ... of each epoch's order
  int world = 1;
};

class DataSource {
 public:
  virtual ~DataSource() = default;
  // Fills `batch` (host tensors laid out as BatchLayoutFor(model, options.batch)) with the
  // next batch and advances; rolls over to the next epoch (new order) when one is exhausted.
  // Errors name the file and record (e.g. a token outside the vocabulary).
  virtual Status Next(Batch& batch) = 0;
  virtual DataPosition position() const = 0;
  // kOutOfRange when `pos` is past the end of its epoch.
  virtual Status Restore(const DataPosition& pos) = 0;
  virtual int64_t batches_per_epoch() const = 0;
  // "bytes" when tokens are the bytes of a text file (gantry sample decodes them), else "".
  virtual std::string tokenizer() const { return ""; }
  virtual std::string description() const = 0;  // e.g. "text /data/fortunes.txt (1.2M tokens)"
};

// Opens the source named by `data` for `model` (a gpt gets token windows of context + 1;
// mlp/cnn get labelled samples). kNotFound names a missing path; kInvalidArgument a bad uri,
// format, or data that does not fit the model (shape, vocabulary).
StatusOr<std::unique_ptr<DataSource>> OpenDataSource(const DataSpec& data, const ModelSpec& model,
                                                     const DataOptions& options);

}  // namespace gantry::train
