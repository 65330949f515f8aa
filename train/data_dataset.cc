// DatasetSource: decodes the loader's raw record bytes into Batch tensors.
#include "train/data_dataset.h"

#include <sys/stat.h>

#include <vector>

#include "storage/loader.h"
#include "train/data_records.h"

namespace gantry::train {
namespace {

class DatasetSource : public DataSource {
 public:
  DatasetSource(std::unique_ptr<storage::DatasetLoader> loader, const ModelSpec& model,
                std::string uri)
      : loader_(std::move(loader)),
        model_(model),
        uri_(std::move(uri)),
        bytes_(loader_->batch_bytes()) {
    const storage::RecordLayout& l = loader_->layout();
    const size_t records = bytes_.size() / l.RecordBytes();
    if (l.kind == storage::RecordKind::kTokens)
      tokens_.resize(records * size_t(l.window));
    else
      labels_.resize(records);
  }

  Status Next(Batch& batch) override {
    GANTRY_RETURN_IF_ERROR(loader_->Next(bytes_));
    const storage::RecordLayout& l = loader_->layout();
    if (l.kind == storage::RecordKind::kTokens) return DecodeTokenBatch(batch);
    GANTRY_RETURN_IF_ERROR(storage::DecodeTensors(l, bytes_, batch.inputs.f32(), labels_.data()));
    for (size_t row = 0; row < labels_.size(); ++row) {
      const int32_t label = labels_[row];
      if (label < 0 || label >= ModelClasses(model_)) {  // name the shard and record
        return WriteLabel(batch, int64_t(row), label, ModelClasses(model_),
                          loader_->RecordOrigin(row).c_str());
      }
      GANTRY_RETURN_IF_ERROR(
          WriteLabel(batch, int64_t(row), label, ModelClasses(model_), uri_.c_str()));
    }
    return OkStatus();
  }
  DataPosition position() const override {
    const storage::LoaderPosition p = loader_->position();
    return {p.epoch, p.batch};
  }
  Status Restore(const DataPosition& pos) override {
    if (pos.batch >= loader_->BatchesInEpoch(pos.epoch)) {
      return OutOfRangeError("data position batch " + std::to_string(pos.batch) +
                             " is past epoch " + std::to_string(pos.epoch) + "'s " +
                             std::to_string(loader_->BatchesInEpoch(pos.epoch)) + " batches of " +
                             uri_ + ": the checkpoint was made with other data or batch size");
    }
    return loader_->Seek({pos.epoch, pos.batch});
  }
  int64_t batches_per_epoch() const override {
    return int64_t(loader_->BatchesInEpoch(loader_->position().epoch));
  }
  std::string description() const override {
    return "dataset " + uri_ + " (" + std::to_string(loader_->index().TotalRecords()) + " records)";
  }

 private:
  Status DecodeTokenBatch(Batch& batch) {
    const int64_t w = loader_->layout().window, t = model_.context;
    size_t bad = 0;
    if (Status st = storage::DecodeTokens(loader_->layout(), bytes_, tokens_.data(), &bad);
        !st.ok()) {
      return st.Prepend(loader_->RecordOrigin(bad));
    }
    const int64_t rows = int64_t(tokens_.size()) / w;
    for (int64_t r = 0; r < rows; ++r) {
      const int32_t* rec = tokens_.data() + r * w;
      for (int64_t i = 0; i <= t; ++i) {
        if (rec[i] < 0 || rec[i] >= model_.vocab) {
          return InvalidArgumentError("token " + std::to_string(rec[i]) + " in " +
                                      loader_->RecordOrigin(size_t(r)) + " is outside model.vocab " +
                                      std::to_string(model_.vocab));
        }
      }
      std::copy(rec, rec + t, batch.inputs.i32() + r * t);
      std::copy(rec + 1, rec + t + 1, batch.targets.i32() + r * t);
    }
    return OkStatus();
  }

  std::unique_ptr<storage::DatasetLoader> loader_;
  ModelSpec model_;
  std::string uri_;
  std::vector<std::byte> bytes_;  // one batch of raw records, reused
  std::vector<int32_t> tokens_;
  std::vector<int32_t> labels_;
};

Status CheckLayout(const storage::RecordLayout& l, const ModelSpec& model, const std::string& uri) {
  if (l.kind == storage::RecordKind::kTokens) {
    if (model.type != "gpt") {
      return InvalidArgumentError(uri + " holds token windows; model.type " + model.type +
                                  " needs labelled tensors (gantry dataset put of mnist or .npy)");
    }
    if (l.window != int64_t(model.context) + 1) {
      return InvalidArgumentError(uri + " has token windows of " + std::to_string(l.window) +
                                  "; model.context " + std::to_string(model.context) +
                                  " needs context + 1 = " + std::to_string(model.context + 1) +
                                  " (re-ingest with gantry dataset put --window)");
    }
    return OkStatus();
  }
  if (model.type == "gpt") {
    return InvalidArgumentError(uri + " holds labelled tensors; model.type gpt needs tokens");
  }
  if (l.SampleElements() != ModelFeatures(model)) {
    return InvalidArgumentError(uri + " has samples of " + std::to_string(l.SampleElements()) +
                                " elements; the model takes " +
                                std::to_string(ModelFeatures(model)));
  }
  return OkStatus();
}

}  // namespace

bool IsDatasetUri(const std::string& uri) {
  if (uri.rfind("ceph://", 0) == 0) return true;
  std::string path = uri.rfind("file://", 0) == 0 ? uri.substr(7) : uri;
  struct stat st;
  return ::stat((path + "/index.json").c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

StatusOr<std::unique_ptr<DataSource>> OpenDatasetSource(const std::string& uri,
                                                        const ModelSpec& model,
                                                        const DataOptions& options) {
  storage::LoaderOptions lo;
  lo.seed = options.seed;
  lo.rank = options.rank;
  lo.world = options.world;
  lo.batch = options.batch;
  auto loader = storage::DatasetLoader::Open(uri, lo);
  if (!loader.ok()) {
    Status s = loader.status();
    return s.Prepend("data.uri " + uri);
  }
  GANTRY_RETURN_IF_ERROR(CheckLayout((*loader)->layout(), model, uri));
  return std::unique_ptr<DataSource>(new DatasetSource(std::move(*loader), model, uri));
}

}  // namespace gantry::train
