// CPU token + position embedding. Tokens are range-checked before anything is written, so a
// bad batch leaves outputs and gradients untouched.
#include <string>

#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/parallel.h"

namespace gantry::kernels::cpu {

namespace {

constexpr double kElementsPerThread = 1 << 16;

Status CheckTokens(const char* op, const Tensor& tokens, int64_t vocab) {
  const int32_t* tp = tokens.i32();
  const int64_t n = tokens.numel(), t = tokens.dim(1);
  for (int64_t i = 0; i < n; ++i) {
    if (tp[i] < 0 || tp[i] >= vocab) {
      return InvalidArgumentError(std::string(op) + ": token " + std::to_string(tp[i]) +
                                  " at position (b=" + std::to_string(i / t) + ", t=" +
                                  std::to_string(i % t) + ") is outside the vocabulary [0, " +
                                  std::to_string(vocab) + "): check the dataset's vocab size");
    }
  }
  return OkStatus();
}

}  // namespace

Status EmbeddingForward(const Tensor& tokens, const Tensor& wte, const Tensor* wpe, Tensor& out) {
  GANTRY_RETURN_IF_ERROR(CheckTokens("EmbeddingForward", tokens, wte.dim(0)));
  const int64_t n = tokens.numel(), t = tokens.dim(1), c = wte.dim(1);
  const int32_t* tp = tokens.i32();
  const float* te = wte.f32();
  const float* pe = wpe != nullptr ? wpe->f32() : nullptr;
  float* op = out.f32();
  const int threads = ThreadsFor(double(n) * c, kElementsPerThread);
  ParallelFor(n, threads, [=](int64_t i_begin, int64_t i_end) {
    for (int64_t i = i_begin; i < i_end; ++i) {
      const float* row = te + int64_t{tp[i]} * c;
      float* dst = op + i * c;
      if (pe != nullptr) {
        const float* prow = pe + (i % t) * c;
#pragma omp simd
        for (int64_t j = 0; j < c; ++j) dst[j] = row[j] + prow[j];
      } else {
#pragma omp simd
        for (int64_t j = 0; j < c; ++j) dst[j] = row[j];
      }
    }
  });
  return OkStatus();
}

Status EmbeddingBackward(const Tensor& tokens, const Tensor& dout, Tensor& dwte, Tensor* dwpe) {
  GANTRY_RETURN_IF_ERROR(CheckTokens("EmbeddingBackward", tokens, dwte.dim(0)));
  const int64_t n = tokens.numel(), t = tokens.dim(1), c = dwte.dim(1);
  const int32_t* tp = tokens.i32();
  const float* gp = dout.f32();
  float* dte = dwte.f32();
  float* dpe = dwpe != nullptr ? dwpe->f32() : nullptr;
  // Sequential over positions: repeated tokens hit the same row (a scatter-add).
  for (int64_t i = 0; i < n; ++i) {
    const float* g = gp + i * c;
    float* row = dte + int64_t{tp[i]} * c;
#pragma omp simd
    for (int64_t j = 0; j < c; ++j) row[j] += g[j];
    if (dpe != nullptr) {
      float* prow = dpe + (i % t) * c;
#pragma omp simd
      for (int64_t j = 0; j < c; ++j) prow[j] += g[j];
    }
  }
  return OkStatus();
}

}  // namespace gantry::kernels::cpu
