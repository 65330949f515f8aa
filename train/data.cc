// DataSource over a RecordSet: a per-epoch permutation from (seed, epoch), sharded by rank.
#include "train/data.h"

#include <sys/stat.h>

#include <vector>

#include "train/data_dataset.h"
#include "train/data_records.h"
#include "train/rng.h"

namespace gantry::train {
namespace {

constexpr uint64_t kOrderSalt = 0x0DE5C0DEull;  // separates order seeds from content seeds

class ShuffledSource : public DataSource {
 public:
  ShuffledSource(std::unique_ptr<RecordSet> records, const DataOptions& opts, int64_t batches)
      : records_(std::move(records)), opts_(opts), batches_(batches) {}

  Status Next(Batch& batch) override {
    if (perm_epoch_ != int64_t(pos_.epoch)) GANTRY_RETURN_IF_ERROR(Shuffle());
    const int64_t b = opts_.batch, w = opts_.world;
    rows_.resize(size_t(b));
    for (int64_t row = 0; row < b; ++row) {
      rows_[size_t(row)] = perm_[(int64_t(pos_.batch) * b + row) * w + opts_.rank];
    }
    GANTRY_RETURN_IF_ERROR(records_->ReadRows(rows_.data(), b, batch, 0));
    if (++pos_.batch == uint64_t(batches_)) {
      pos_.batch = 0;
      ++pos_.epoch;
    }
    return OkStatus();
  }
  DataPosition position() const override { return pos_; }
  Status Restore(const DataPosition& pos) override {
    if (pos.batch >= uint64_t(batches_)) {
      return OutOfRangeError("data position batch " + std::to_string(pos.batch) +
                             " is past the epoch's " + std::to_string(batches_) +
                             " batches: the checkpoint was made with other data or batch size");
    }
    pos_ = pos;
    return OkStatus();
  }
  int64_t batches_per_epoch() const override { return batches_; }
  std::string tokenizer() const override { return records_->tokenizer(); }
  std::string description() const override { return records_->description(); }

 private:
  // Fisher-Yates over all records with an Rng seeded from (seed, epoch); every rank computes
  // the same permutation and takes its stride of it.
  Status Shuffle() {
    const int64_t n = records_->size();
    try {
      perm_.resize(n);
    } catch (const std::exception&) {  // bad_alloc, length_error
      return ResourceExhaustedError(
          "data " + records_->description() + ": the epoch's shuffled order of " +
          std::to_string(n) + " records needs " + std::to_string(n >> 17) +
          " MiB, which this host cannot allocate; use fewer records (data.synthetic_samples, "
          "or a smaller dataset)");
    }
    for (int64_t i = 0; i < n; ++i) perm_[i] = i;
    Rng rng(MixSeed(MixSeed(opts_.seed, kOrderSalt), pos_.epoch));
    for (int64_t i = n - 1; i > 0; --i) std::swap(perm_[i], perm_[rng.Below(uint64_t(i) + 1)]);
    perm_epoch_ = int64_t(pos_.epoch);
    return OkStatus();
  }

  std::unique_ptr<RecordSet> records_;
  DataOptions opts_;
  int64_t batches_;
  DataPosition pos_;
  std::vector<int64_t> perm_;
  std::vector<int64_t> rows_;  // this batch's record indices
  int64_t perm_epoch_ = -1;
};

bool IsDir(const std::string& p) {
  struct stat st;
  return ::stat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}
bool Exists(const std::string& p) {
  struct stat st;
  return ::stat(p.c_str(), &st) == 0;
}
bool EndsWith(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// Format from the path when data.format is empty.
StatusOr<std::string> InferFormat(const std::string& path) {
  if (IsDir(path)) {
    if (Exists(path + "/train-images-idx3-ubyte")) return std::string("mnist");
    if (Exists(path + "/inputs.npy")) return std::string("tensors");
  }
  if (EndsWith(path, ".txt") || EndsWith(path, ".text")) return std::string("text");
  if (EndsWith(path, ".u32")) return std::string("tokens_u32");
  if (EndsWith(path, ".bin") || EndsWith(path, ".u16")) return std::string("tokens_u16");
  return InvalidArgumentError("cannot infer data.format of '" + path +
                              "': set data.format to tokens_u16, tokens_u32, text, mnist or "
                              "tensors");
}

StatusOr<std::unique_ptr<RecordSet>> OpenRecords(const DataSpec& data, const ModelSpec& model,
                                                 uint64_t seed) {
  const std::string& uri = data.uri;
  if (uri == "synthetic" || uri.empty()) {
    return OpenSyntheticRecords(model, seed, data.synthetic_samples);
  }
  std::string path = uri, format = data.format;
  if (uri.rfind("file://", 0) == 0) path = uri.substr(7);
  if (uri.rfind("mnist://", 0) == 0) {
    path = uri.substr(8);
    if (format.empty()) format = "mnist";
  }
  if (!Exists(path)) {
    return NotFoundError("data file not found: " + path + " (data.uri '" + uri +
                         "'); check the path or use data.uri: synthetic");
  }
  if (format.empty()) {
    GANTRY_ASSIGN_OR_RETURN(format, InferFormat(path));
  }
  if (format == "tokens_u16" || format == "tokens_u32" || format == "text") {
    if (model.type != "gpt") {
      return InvalidArgumentError("data.format " + format + " needs model.type gpt, got " +
                                  model.type);
    }
    return OpenTokenRecords(path, format, model);
  }
  if (model.type == "gpt") {
    return InvalidArgumentError(
        "model.type gpt needs token data (tokens_u16, tokens_u32 or "
        "text), got data.format " +
        format);
  }
  if (format == "mnist") return OpenMnistRecords(path, model);
  if (format == "tensors") return OpenTensorRecords(path, model);
  return InvalidArgumentError("unknown data.format '" + format +
                              "': expected tokens_u16, tokens_u32, text, mnist or tensors");
}

}  // namespace

StatusOr<std::unique_ptr<DataSource>> OpenDataSource(const DataSpec& data, const ModelSpec& model,
                                                     const DataOptions& options) {
  if (options.batch <= 0 || options.world <= 0 || options.rank < 0 ||
      options.rank >= options.world) {
    return InvalidArgumentError(
        "data: need batch > 0 and 0 <= rank < world, got batch " + std::to_string(options.batch) +
        ", rank " + std::to_string(options.rank) + ", world " + std::to_string(options.world));
  }
  // Datasets made by `gantry dataset put` (ceph://, or a directory with index.json) go
  // through the distributed loader; local files and synthetic data through a RecordSet.
  if (IsDatasetUri(data.uri)) return OpenDatasetSource(data.uri, model, options);
  GANTRY_ASSIGN_OR_RETURN(std::unique_ptr<RecordSet> records,
                          OpenRecords(data, model, options.seed));
  const int64_t per_rank = records->size() / options.world;
  const int64_t batches = per_rank / options.batch;
  if (batches == 0) {
    return InvalidArgumentError(records->description() + " has " + std::to_string(records->size()) +
                                " records, fewer than one batch (" + std::to_string(options.batch) +
                                ") per rank for " + std::to_string(options.world) +
                                " ranks: use more data or a smaller data.batch_per_rank");
  }
  return std::unique_ptr<DataSource>(new ShuffledSource(std::move(records), options, batches));
}

}  // namespace gantry::train
