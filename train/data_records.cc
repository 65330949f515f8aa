// Record sets: memory-mapped token/text files, MNIST idx, .npy tensors, and synthetic data.
#include "train/data_records.h"

#include "train/mapped_file.h"
#include "train/rng.h"

namespace gantry::train {

int64_t ModelFeatures(const ModelSpec& m) {
  if (m.type == "mlp") return m.widths.empty() ? 0 : m.widths.front();
  if (m.input.size() != 3) return 0;
  return int64_t(m.input[0]) * m.input[1] * m.input[2];
}
int64_t ModelClasses(const ModelSpec& m) {
  if (m.type == "mlp") return m.widths.empty() ? 0 : m.widths.back();
  return m.classes;
}

Status WriteLabel(Batch& batch, int64_t row, int64_t label, int64_t classes, const char* what) {
  if (label < 0 || label >= classes) {
    return InvalidArgumentError(std::string(what) + ": label " + std::to_string(label) +
                                " is outside the model's " + std::to_string(classes) + " classes");
  }
  if (batch.targets.dtype() == kernels::DType::kF32) {
    float* t = batch.targets.f32() + row * classes;
    for (int64_t c = 0; c < classes; ++c) t[c] = c == label ? 1.0f : 0.0f;
  } else {
    batch.targets.i32()[row] = int32_t(label);
  }
  return OkStatus();
}

namespace {

class TokenRecords : public RecordSet {
 public:
  TokenRecords(std::unique_ptr<MappedFile> file, int width, const ModelSpec& m, bool text)
      : file_(std::move(file)), width_(width), context_(m.context), vocab_(m.vocab), text_(text) {
    tokens_ = int64_t(file_->size() / width_);
  }
  int64_t size() const override { return (tokens_ - 1) / context_; }
  Status Read(int64_t index, Batch& batch, int64_t row) const override {
    int32_t* in = batch.inputs.i32() + row * context_;
    int32_t* tg = batch.targets.i32() + row * context_;
    const int64_t first = index * context_;
    for (int64_t t = 0; t <= context_; ++t) {
      const uint32_t tok = Token(first + t);
      if (tok >= uint32_t(vocab_)) {
        return InvalidArgumentError("token " + std::to_string(tok) + " at position " +
                                    std::to_string(first + t) + " of " + file_->path() +
                                    " is outside model.vocab " + std::to_string(vocab_));
      }
      if (t < context_) in[t] = int32_t(tok);
      if (t > 0) tg[t - 1] = int32_t(tok);
    }
    return OkStatus();
  }
  std::string description() const override {
    return std::string(text_ ? "text " : "tokens ") + file_->path() + " (" +
           std::to_string(tokens_) + " tokens)";
  }
  std::string tokenizer() const override { return text_ ? "bytes" : ""; }

 private:
  uint32_t Token(int64_t i) const {
    const uint8_t* p = file_->data() + i * width_;
    if (width_ == 1) return p[0];
    if (width_ == 2) return uint32_t(p[0]) | uint32_t(p[1]) << 8;  // little-endian
    return uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24;
  }
  std::unique_ptr<MappedFile> file_;
  int width_;
  int64_t context_, vocab_;
  bool text_;
  int64_t tokens_ = 0;
};

uint32_t BigEndian32(const uint8_t* p) {
  return uint32_t(p[0]) << 24 | uint32_t(p[1]) << 16 | uint32_t(p[2]) << 8 | p[3];
}

class MnistRecords : public RecordSet {
 public:
  MnistRecords(std::unique_ptr<MappedFile> images, std::unique_ptr<MappedFile> labels,
               int64_t count, int64_t pixels, int64_t classes)
      : images_(std::move(images)),
        labels_(std::move(labels)),
        count_(count),
        pixels_(pixels),
        classes_(classes) {}
  int64_t size() const override { return count_; }
  Status Read(int64_t index, Batch& batch, int64_t row) const override {
    const uint8_t* src = images_->data() + 16 + index * pixels_;
    float* dst = batch.inputs.f32() + row * pixels_;
    for (int64_t i = 0; i < pixels_; ++i) dst[i] = float(src[i]) * (1.0f / 255.0f);
    return WriteLabel(batch, row, labels_->data()[8 + index], classes_, labels_->path().c_str());
  }
  std::string description() const override {
    return "mnist " + images_->path() + " (" + std::to_string(count_) + " images)";
  }

 private:
  std::unique_ptr<MappedFile> images_, labels_;
  int64_t count_, pixels_, classes_;
};

}  // namespace

StatusOr<std::unique_ptr<RecordSet>> OpenTokenRecords(const std::string& path,
                                                      const std::string& format,
                                                      const ModelSpec& model) {
  const bool text = format == "text";
  const int width = text ? 1 : format == "tokens_u16" ? 2 : 4;
  if (text && model.vocab < 256) {
    return InvalidArgumentError(
        "data.format text uses byte tokens: model.vocab must be >= 256, "
        "got " +
        std::to_string(model.vocab));
  }
  GANTRY_ASSIGN_OR_RETURN(std::unique_ptr<MappedFile> f, MappedFile::Open(path));
  if (f->size() % width != 0) {
    return InvalidArgumentError(path + ": size " + std::to_string(f->size()) +
                                " is not a multiple of " + std::to_string(width) + " (" + format +
                                "); is data.format right?");
  }
  const int64_t tokens = int64_t(f->size() / width);
  if (tokens < int64_t(model.context) + 1) {
    return InvalidArgumentError(
        path + " has " + std::to_string(tokens) +
        " tokens; a window needs model.context + 1 = " + std::to_string(model.context + 1));
  }
  return std::unique_ptr<RecordSet>(new TokenRecords(std::move(f), width, model, text));
}

StatusOr<std::unique_ptr<RecordSet>> OpenMnistRecords(const std::string& dir,
                                                      const ModelSpec& model) {
  const std::string ipath = dir + "/train-images-idx3-ubyte";
  const std::string lpath = dir + "/train-labels-idx1-ubyte";
  GANTRY_ASSIGN_OR_RETURN(std::unique_ptr<MappedFile> images, MappedFile::Open(ipath));
  GANTRY_ASSIGN_OR_RETURN(std::unique_ptr<MappedFile> labels, MappedFile::Open(lpath));
  if (images->size() < 16 || BigEndian32(images->data()) != 0x803) {
    return InvalidArgumentError(ipath + " is not an MNIST idx3 image file (magic 0x803)");
  }
  if (labels->size() < 8 || BigEndian32(labels->data()) != 0x801) {
    return InvalidArgumentError(lpath + " is not an MNIST idx1 label file (magic 0x801)");
  }
  const int64_t n = BigEndian32(images->data() + 4);
  const int64_t pixels =
      int64_t(BigEndian32(images->data() + 8)) * BigEndian32(images->data() + 12);
  if (images->size() < size_t(16 + n * pixels) || BigEndian32(labels->data() + 4) != n ||
      labels->size() < size_t(8 + n)) {
    return InvalidArgumentError(ipath + " / " + lpath + ": truncated or inconsistent counts");
  }
  if (pixels != ModelFeatures(model)) {
    return InvalidArgumentError(ipath + ": images have " + std::to_string(pixels) +
                                " pixels but the model takes " +
                                std::to_string(ModelFeatures(model)) + " input features");
  }
  return std::unique_ptr<RecordSet>(
      new MnistRecords(std::move(images), std::move(labels), n, pixels, ModelClasses(model)));
}

}  // namespace gantry::train
