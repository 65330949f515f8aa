// Record sets from labelled .npy tensors and from synthetic (seeded) data.
#include <cstring>
#include <vector>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "base/npy.h"
#include "train/data_records.h"
#include "train/mapped_file.h"
#include "train/rng.h"

namespace gantry::train {
namespace {

constexpr uint64_t kContentSalt = 0xC0A7E47ull;  // synthetic content seeds vs order seeds

// A parsed .npy array (C order, little-endian) pointing into its mapped file.
struct NpyArray {
  std::unique_ptr<MappedFile> file;
  std::string descr;  // e.g. "<f4"
  std::vector<int64_t> shape;
  const uint8_t* data = nullptr;
};

StatusOr<NpyArray> OpenNpy(const std::string& path) {
  NpyArray a;
  GANTRY_ASSIGN_OR_RETURN(a.file, MappedFile::Open(path));
  const std::span<const uint8_t> bytes(a.file->data(), a.file->size());
  GANTRY_ASSIGN_OR_RETURN(const uint64_t end, NpyHeaderEnd(bytes, path));
  GANTRY_ASSIGN_OR_RETURN(NpyHeader h,
                          ParseNpyHeader(bytes.first(std::min<uint64_t>(end, bytes.size())),
                                         bytes.size(), path));
  if (h.descr != "<f4" && h.descr != "<i4" && h.descr != "<i8") {
    return InvalidArgumentError(path + ": dtype '" + h.descr +
                                "' not supported: need <f4, <i4 or <i8");
  }
  a.descr = h.descr;
  a.shape = std::move(h.shape);
  a.data = bytes.data() + h.data_offset;
  return a;
}

class TensorRecords : public RecordSet {
 public:
  TensorRecords(NpyArray inputs, NpyArray targets, int64_t features, int64_t classes)
      : in_(std::move(inputs)), tg_(std::move(targets)), features_(features), classes_(classes) {}
  int64_t size() const override { return in_.shape[0]; }
  Status Read(int64_t index, Batch& batch, int64_t row) const override {
    std::memcpy(batch.inputs.f32() + row * features_, in_.data + index * features_ * 4,
                features_ * 4);
    if (tg_.descr == "<f4") {  // regression targets [N, classes]
      std::memcpy(batch.targets.f32() + row * classes_, tg_.data + index * classes_ * 4,
                  classes_ * 4);
      return OkStatus();
    }
    int64_t label = 0;
    if (tg_.descr == "<i4") {
      int32_t v;
      std::memcpy(&v, tg_.data + index * 4, 4);
      label = v;
    } else {
      std::memcpy(&label, tg_.data + index * 8, 8);
    }
    return WriteLabel(batch, row, label, classes_, tg_.file->path().c_str());
  }
  std::string description() const override {
    return "tensors " + in_.file->path() + " (" + std::to_string(size()) + " samples)";
  }

 private:
  NpyArray in_, tg_;
  int64_t features_, classes_;
};

class SyntheticRecords : public RecordSet {
 public:
  SyntheticRecords(const ModelSpec& m, uint64_t seed, int64_t records)
      : gpt_(m.type == "gpt"), seed_(MixSeed(seed, kContentSalt)), records_(records) {
    if (gpt_) {
      context_ = m.context;
      vocab_ = m.vocab;
    } else {
      features_ = ModelFeatures(m);
      classes_ = ModelClasses(m);
      sums_.resize(classes_);
    }
  }
  int64_t size() const override { return records_; }
  Status Read(int64_t index, Batch& batch, int64_t row) const override {
    Rng rng(MixSeed(seed_, uint64_t(index)));
    if (gpt_) {
      int32_t* in = batch.inputs.i32() + row * context_;
      int32_t* tg = batch.targets.i32() + row * context_;
      for (int64_t t = 0; t <= context_; ++t) {
        const int32_t tok = int32_t(rng.Below(uint64_t(vocab_)));
        if (t < context_) in[t] = tok;
        if (t > 0) tg[t - 1] = tok;
      }
      return OkStatus();
    }
    float* x = batch.inputs.f32() + row * features_;
    std::fill(sums_.begin(), sums_.end(), 0.0);
    // Feature j adds to class j % classes (a running index: a 64-bit division per feature
    // was most of this loop's time, and Read runs on the training thread when no core is
    // spare for prefetching).
    for (int64_t j = 0, c = 0; j < features_; ++j) {
      const float v = rng.Uniform();
      x[j] = v;
      sums_[size_t(c)] += v;
      if (++c == classes_) c = 0;
    }
    return WriteLabel(batch, row, LabelOf(sums_.data(), 1), classes_, "synthetic");
  }
  // Classification features of 8 records at a time on AVX-512 CPUs: 8 generators in the 8
  // 64-bit lanes of a vector, the same arithmetic per lane, so the same values as Read
  // (checked by a test) at a fraction of the instructions. Read runs on the training thread
  // when no core is spare for prefetching, where it was ~5% of an mlp-mnist step.
  Status ReadRows(const int64_t* indices, int64_t n, Batch& batch, int64_t row0) const override {
    int64_t i = 0;
#if defined(__x86_64__)
    if (!gpt_ && __builtin_cpu_supports("avx512f")) {
      for (; i + 8 <= n; i += 8) {
        GANTRY_RETURN_IF_ERROR(ReadEight(indices + i, batch, row0 + i));
      }
    }
#endif
    return RecordSet::ReadRows(indices + i, n - i, batch, row0 + i);
  }
  std::string description() const override {
    return "synthetic (" + std::to_string(records_) + " records)";
  }

 private:
  // The class whose features sum highest (the first of equal ones); class c's sum is at
  // sums[c * stride]. Read and ReadEight share it, so both label alike.
  int64_t LabelOf(const double* sums, int64_t stride) const {
    int64_t label = 0;
    for (int64_t c = 1; c < classes_; ++c) {
      if (sums[c * stride] > sums[label * stride]) label = c;
    }
    return label;
  }

  bool gpt_;
  uint64_t seed_;
  int64_t records_;
  int64_t context_ = 0, vocab_ = 0, features_ = 0, classes_ = 0;
  mutable std::vector<double> sums_;  // per-class sums (scratch)
  mutable std::vector<float> lanes_;  // ReadEight: features x 8 records, lane-interleaved
  mutable std::vector<double> lane_sums_;  // ReadEight: classes x 8 records

#if defined(__x86_64__)
  __attribute__((target("avx512f"))) Status ReadEight(const int64_t* idx, Batch& batch,
                                                        int64_t row0) const {
    alignas(64) uint64_t st[4][8];
    for (int g = 0; g < 8; ++g) {
      const Rng rng(MixSeed(seed_, uint64_t(idx[g])));
      for (int k = 0; k < 4; ++k) st[k][g] = rng.state()[k];
    }
    __m512i s0 = _mm512_load_si512(st[0]), s1 = _mm512_load_si512(st[1]);
    __m512i s2 = _mm512_load_si512(st[2]), s3 = _mm512_load_si512(st[3]);
    lanes_.resize(size_t(features_) * 8);
    lane_sums_.assign(size_t(classes_) * 8, 0.0);
    float* lanes = lanes_.data();
    double* sums = lane_sums_.data();
    const __m256 scale = _mm256_set1_ps(1.0f / 16777216.0f);
    for (int64_t j = 0, c = 0; j < features_; ++j) {
      // xoshiro256** (Rng::NextU64) in every lane: rotl(s1 * 5, 7) * 9, then the state step.
      const __m512i m5 = _mm512_add_epi64(s1, _mm512_slli_epi64(s1, 2));
      const __m512i r = _mm512_rol_epi64(m5, 7);
      const __m512i out = _mm512_add_epi64(r, _mm512_slli_epi64(r, 3));
      const __m512i t = _mm512_slli_epi64(s1, 17);
      s2 = _mm512_xor_si512(s2, s0);
      s3 = _mm512_xor_si512(s3, s1);
      s1 = _mm512_xor_si512(s1, s2);
      s0 = _mm512_xor_si512(s0, s3);
      s2 = _mm512_xor_si512(s2, t);
      s3 = _mm512_rol_epi64(s3, 45);
      // Rng::Uniform: the top 24 bits, exactly as a float, times 2^-24.
      const __m256i top = _mm512_cvtepi64_epi32(_mm512_srli_epi64(out, 40));
      const __m256 v = _mm256_mul_ps(_mm256_cvtepi32_ps(top), scale);
      _mm256_storeu_ps(lanes + j * 8, v);
      double* sc = sums + c * 8;
      _mm512_storeu_pd(sc, _mm512_add_pd(_mm512_loadu_pd(sc), _mm512_cvtps_pd(v)));
      if (++c == classes_) c = 0;
    }
    float* x0 = batch.inputs.f32() + row0 * features_;
    int64_t j = 0;
    for (; j + 8 <= features_; j += 8) {  // 8x8 transposes: lane g becomes row g
      __m256 r[8], u[8];
      for (int k = 0; k < 8; ++k) r[k] = _mm256_loadu_ps(lanes + (j + k) * 8);
      for (int k = 0; k < 8; k += 2) {
        u[k] = _mm256_unpacklo_ps(r[k], r[k + 1]);
        u[k + 1] = _mm256_unpackhi_ps(r[k], r[k + 1]);
      }
      for (int k = 0; k < 8; k += 4) {
        for (int h = 0; h < 2; ++h) {
          const __m256 a = u[k + h], b = u[k + 2 + h];
          r[k + 2 * h] = _mm256_shuffle_ps(a, b, 0x44);
          r[k + 2 * h + 1] = _mm256_shuffle_ps(a, b, 0xEE);
        }
      }
      // r[0..3]: lanes {0,1,4,5}/{2,3,6,7} mixes of features j..j+3; r[4..7]: of j+4..j+7.
      for (int k = 0; k < 4; ++k) {
        _mm256_storeu_ps(x0 + k * features_ + j, _mm256_permute2f128_ps(r[k], r[k + 4], 0x20));
        _mm256_storeu_ps(x0 + (k + 4) * features_ + j,
                         _mm256_permute2f128_ps(r[k], r[k + 4], 0x31));
      }
    }
    for (int g = 0; g < 8; ++g) {
      float* x = x0 + g * features_;
      for (int64_t jj = j; jj < features_; ++jj) x[jj] = lanes[jj * 8 + g];
      GANTRY_RETURN_IF_ERROR(
          WriteLabel(batch, row0 + g, LabelOf(sums + g, 8), classes_, "synthetic"));
    }
    return OkStatus();
  }
#endif
};

}  // namespace

StatusOr<std::unique_ptr<RecordSet>> OpenTensorRecords(const std::string& dir,
                                                       const ModelSpec& model) {
  GANTRY_ASSIGN_OR_RETURN(NpyArray in, OpenNpy(dir + "/inputs.npy"));
  GANTRY_ASSIGN_OR_RETURN(NpyArray tg, OpenNpy(dir + "/targets.npy"));
  const int64_t features = ModelFeatures(model), classes = ModelClasses(model);
  int64_t in_features = 1;
  for (size_t i = 1; i < in.shape.size(); ++i) in_features *= in.shape[i];
  if (in.descr != "<f4" || in_features != features) {
    return InvalidArgumentError(dir + "/inputs.npy: need float32 [N, ...] with " +
                                std::to_string(features) + " features per sample, got " + in.descr +
                                " with " + std::to_string(in_features));
  }
  const bool mse = model.loss == "mse";
  const bool ok = tg.shape[0] == in.shape[0] &&
                  (mse ? tg.descr == "<f4" && tg.shape.size() == 2 && tg.shape[1] == classes
                       : tg.descr != "<f4" && tg.shape.size() == 1);
  if (!ok) {
    return InvalidArgumentError(dir + "/targets.npy: need " +
                                (mse ? "float32 [N, " + std::to_string(classes) + "]"
                                     : std::string("int32/int64 [N] labels")) +
                                " with N = " + std::to_string(in.shape[0]) + " (inputs.npy)");
  }
  return std::unique_ptr<RecordSet>(
      new TensorRecords(std::move(in), std::move(tg), features, classes));
}

StatusOr<std::unique_ptr<RecordSet>> OpenSyntheticRecords(const ModelSpec& model, uint64_t seed,
                                                          int64_t records) {
  if (records <= 0) {
    return InvalidArgumentError("data.synthetic_samples must be positive, got " +
                                std::to_string(records));
  }
  if (model.type != "gpt" && (ModelFeatures(model) <= 0 || ModelClasses(model) <= 0)) {
    return InvalidArgumentError("synthetic data: the model has no input features or classes");
  }
  return std::unique_ptr<RecordSet>(new SyntheticRecords(model, seed, records));
}

}  // namespace gantry::train
