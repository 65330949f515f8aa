// Random-access record sets behind the DataSource (train/data.h): each knows how many records
// it holds and writes record i into one row of a Batch. Internal to train/.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "base/job_spec.h"
#include "base/status.h"
#include "train/model.h"

namespace gantry::train {

// Input features per sample (mlp: widths[0]; cnn: C*H*W) and output classes of a model.
int64_t ModelFeatures(const ModelSpec& m);
int64_t ModelClasses(const ModelSpec& m);
// Writes `label` into row `row` of batch.targets: an index (i32), or a one-hot row (f32, mse).
// kInvalidArgument naming `what` when label is outside [0, classes).
Status WriteLabel(Batch& batch, int64_t row, int64_t label, int64_t classes, const char* what);

class RecordSet {
 public:
  virtual ~RecordSet() = default;
  virtual int64_t size() const = 0;
  // Writes record `index` into row `row` of batch.inputs / batch.targets (host tensors).
  virtual Status Read(int64_t index, Batch& batch, int64_t row) const = 0;
  // Records indices[0..n) into rows row0 .. row0 + n - 1: the same bytes as n Read calls
  // (the default makes them); sets that can work on several records at once override it.
  virtual Status ReadRows(const int64_t* indices, int64_t n, Batch& batch, int64_t row0) const {
    for (int64_t i = 0; i < n; ++i) GANTRY_RETURN_IF_ERROR(Read(indices[i], batch, row0 + i));
    return OkStatus();
  }
  virtual std::string description() const = 0;
  virtual std::string tokenizer() const { return ""; }
};

// Token windows of context + 1 over a file of uint16/uint32 tokens or of text bytes
// (format "tokens_u16" | "tokens_u32" | "text"): record i covers tokens [i*T, i*T + T + 1).
StatusOr<std::unique_ptr<RecordSet>> OpenTokenRecords(const std::string& path,
                                                      const std::string& format,
                                                      const ModelSpec& model);
// MNIST idx files in `dir` (train-images-idx3-ubyte, train-labels-idx1-ubyte): pixels / 255.
StatusOr<std::unique_ptr<RecordSet>> OpenMnistRecords(const std::string& dir,
                                                      const ModelSpec& model);
// `dir`/inputs.npy (float32 [N, ...]) and `dir`/targets.npy (int32/int64 [N] labels, or
// float32 [N, out] for mse).
StatusOr<std::unique_ptr<RecordSet>> OpenTensorRecords(const std::string& dir,
                                                       const ModelSpec& model);
// Records generated from (seed, index): random tokens for gpt; for mlp/cnn uniform [0, 1)
// inputs labelled by which of `classes` feature groups (feature j in group j % classes) has
// the largest sum, so the task is learnable (one-hot targets for mse).
StatusOr<std::unique_ptr<RecordSet>> OpenSyntheticRecords(const ModelSpec& model, uint64_t seed,
                                                          int64_t records);

}  // namespace gantry::train
