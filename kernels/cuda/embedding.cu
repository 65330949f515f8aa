// Token + learned position embedding on CUDA. Forward gathers rows; backward scatters into
// dwte with atomicAdd (tokens repeat) and sums dwpe over the batch without atomics.
// An out-of-range token yields a NaN row and a deferred kInvalidArgument (see context.h).
#include <cuda_runtime.h>

#include <string>

#include "kernels/cuda/check.h"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/context.h"
#include "kernels/cuda/cuda_ops.h"

namespace gantry::kernels::cuda {
namespace {

struct EmbedDims {
  int64_t batch, seq, vocab, channels;
};

StatusOr<EmbedDims> Dims(const char* op, const OpEnv& env, const Tensor& tokens,
                         const Tensor& table, const Tensor& act, const Tensor* wpe) {
  GANTRY_RETURN_IF_ERROR(CheckOperand(op, "tokens", tokens, env, DType::kI32));
  GANTRY_RETURN_IF_ERROR(CheckOperand(op, "wte", table, env));
  GANTRY_RETURN_IF_ERROR(CheckOperand(op, "activations", act, env));
  if (tokens.rank() != 2 || table.rank() != 2 ||
      act.numel() != tokens.numel() * table.dim(1)) {
    return InvalidArgumentError(std::string(op) + ": tokens " + tokens.ToString() + ", wte " +
                                table.ToString() + " and " + act.ToString() +
                                " must be [B, T], [V, C] and [B, T, C]");
  }
  EmbedDims d{tokens.dim(0), tokens.dim(1), table.dim(0), table.dim(1)};
  if (wpe != nullptr) {
    GANTRY_RETURN_IF_ERROR(CheckOperand(op, "wpe", *wpe, env));
    if (wpe->rank() != 2 || wpe->dim(1) != d.channels || wpe->dim(0) < d.seq) {
      return InvalidArgumentError(std::string(op) + ": wpe " + wpe->ToString() +
                                  " must be [Tmax >= " + std::to_string(d.seq) + ", " +
                                  std::to_string(d.channels) + "]");
    }
  }
  return d;
}

}  // namespace

Status EmbeddingForward(const Tensor& tokens, const Tensor& wte, const Tensor* wpe,
                        Tensor& out) {
  constexpr const char* kOp = "EmbeddingForward";
  GANTRY_ASSIGN_OR_RETURN(OpEnv env, BeginOp(kOp, out));
  GANTRY_ASSIGN_OR_RETURN(EmbedDims d, Dims(kOp, env, tokens, wte, out, wpe));
  const int32_t* tok = tokens.i32();
  const float* pte = wte.f32();
  const float* ppe = wpe != nullptr ? wpe->f32() : nullptr;
  float* po = out.f32();
  IndexError* err = env.index_error;
  const int64_t C = d.channels, T = d.seq, V = d.vocab;
  return LaunchElementwise(out.numel(), env.stream, [=] __device__(int64_t i) {
    const int64_t bt = i / C, c = i % C;
    const int32_t id = tok[bt];
    if (id < 0 || id >= V) {
      po[i] = NAN;
      if (c == 0) ReportBadIndex(err, IndexOp::kEmbeddingForward, bt, id, V);
      return;
    }
    float v = pte[int64_t(id) * C + c];
    if (ppe != nullptr) v += ppe[(bt % T) * C + c];
    po[i] = v;
  });
}

Status EmbeddingBackward(const Tensor& tokens, const Tensor& dout, Tensor& dwte, Tensor* dwpe) {
  constexpr const char* kOp = "EmbeddingBackward";
  GANTRY_ASSIGN_OR_RETURN(OpEnv env, BeginOp(kOp, dout));
  GANTRY_ASSIGN_OR_RETURN(EmbedDims d, Dims(kOp, env, tokens, dwte, dout, dwpe));
  const int32_t* tok = tokens.i32();
  const float* pd = dout.f32();
  float* pte = dwte.f32();
  IndexError* err = env.index_error;
  const int64_t B = d.batch, C = d.channels, T = d.seq, V = d.vocab;
  GANTRY_RETURN_IF_ERROR(LaunchElementwise(dout.numel(), env.stream, [=] __device__(int64_t i) {
    const int64_t bt = i / C, c = i % C;
    const int32_t id = tok[bt];
    if (id < 0 || id >= V) {
      if (c == 0) ReportBadIndex(err, IndexOp::kEmbeddingBackward, bt, id, V);
      return;
    }
    atomicAdd(&pte[int64_t(id) * C + c], pd[i]);
  }));
  if (dwpe == nullptr) return OkStatus();
  float* ppe = dwpe->f32();
  return LaunchElementwise(T * C, env.stream, [=] __device__(int64_t i) {
    float s = 0.0f;
    for (int64_t b = 0; b < B; ++b) s += pd[b * T * C + i];
    ppe[i] += s;
  });
}

}  // namespace gantry::kernels::cuda
