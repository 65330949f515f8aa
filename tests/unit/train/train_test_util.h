// Helpers shared by the train/ unit tests: small model specs, temp dirs, batch filling.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "base/job_spec.h"
#include "train/model.h"
#include "train/rng.h"

namespace gantry::train::testing {

inline ModelSpec TinyGpt(int vocab = 32, int context = 8) {
  ModelSpec s;
  s.type = "gpt";
  s.vocab = vocab;
  s.context = context;
  s.d_model = 16;
  s.layers = 2;
  s.heads = 2;
  s.mlp = 24;
  return s;
}
inline ModelSpec TinyMlp(const std::string& act = "tanh",
                         const std::string& loss = "cross_entropy") {
  ModelSpec s;
  s.type = "mlp";
  s.widths = {12, 10, 8, 5};
  s.activation = act;
  s.loss = loss;
  return s;
}
inline ModelSpec TinyCnn(const std::string& pool = "avg") {
  ModelSpec s;
  s.type = "cnn";
  s.input = {2, 8, 8};
  s.channels = {3, 4};
  s.kernel = 3;
  s.pool = pool;
  s.classes = 5;
  return s;
}

// Fills a batch with seeded random inputs and valid targets for `spec`.
inline void FillBatch(const ModelSpec& spec, Batch& b, uint64_t seed) {
  Rng rng(seed);
  if (spec.type == "gpt") {
    for (int64_t i = 0; i < b.inputs.numel(); ++i)
      b.inputs.i32()[i] = int32_t(rng.Below(spec.vocab));
    for (int64_t i = 0; i < b.targets.numel(); ++i)
      b.targets.i32()[i] = int32_t(rng.Below(spec.vocab));
    return;
  }
  for (int64_t i = 0; i < b.inputs.numel(); ++i) b.inputs.f32()[i] = rng.Normal();
  const int64_t classes = spec.type == "mlp" ? spec.widths.back() : spec.classes;
  if (b.targets.dtype() == kernels::DType::kF32) {
    for (int64_t i = 0; i < b.targets.numel(); ++i) b.targets.f32()[i] = rng.Normal();
  } else {
    for (int64_t i = 0; i < b.targets.numel(); ++i)
      b.targets.i32()[i] = int32_t(rng.Below(classes));
  }
}

// A fresh directory under the system temp dir, removed when the object dies.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "gantry-train-XXXXXX").string();
    path_ = ::mkdtemp(tmpl.data());
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  const std::string& path() const { return path_; }
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

inline void WriteFile(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary);
  f.write(bytes.data(), std::streamsize(bytes.size()));
}
inline std::string ReadFile(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

// A version-1 .npy file with `descr` ("<f4", "<i8"), `shape` ("(2, 3)") and raw `data`.
inline std::string Npy(const std::string& descr, const std::string& shape,
                       const std::string& data) {
  std::string header =
      "{'descr': '" + descr + "', 'fortran_order': False, 'shape': " + shape + ", }";
  while ((10 + header.size() + 1) % 64 != 0) header.push_back(' ');
  header.push_back('\n');
  std::string out = "\x93NUMPY";
  out.push_back(1);
  out.push_back(0);
  out.push_back(char(header.size() & 0xff));
  out.push_back(char(header.size() >> 8));
  return out + header + data;
}

}  // namespace gantry::train::testing
