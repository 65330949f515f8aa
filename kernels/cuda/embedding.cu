// Token + learned position embedding on CUDA. Forward gathers rows; backward sorts the tokens
// (stable radix sort, CUB) and sums each token's rows in position order, so dwte is
// deterministic without atomics; dwpe sums over the batch in order.
// An out-of-range token yields a NaN row and a deferred kInvalidArgument (see context.h).
#include <cuda_runtime.h>

#include <climits>
#include <cub/device/device_radix_sort.cuh>

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
  const int64_t B = d.batch, C = d.channels, T = d.seq, V = d.vocab, N = B * T;
  if (N > INT32_MAX || V >= INT32_MAX) {
    return InvalidArgumentError(std::string(kOp) + ": " + std::to_string(N) + " tokens or vocab " +
                                std::to_string(V) + " exceed the int32 sort keys");
  }
  if (N > 0) {
    // Deterministic scatter: sort (token, position) pairs by token with a stable radix sort, so
    // each token's positions are in ascending order, then one thread per (token run, channel)
    // sums its rows in that order and adds the sum to dwte. Out-of-range tokens sort last
    // (key V) and are skipped after being reported.
    // Keys 0..V; V == 0 (an empty table: every token is bad, key 0) still needs one bit, and
    // __builtin_clzll(0) is undefined.
    const int bits = V > 0 ? 64 - __builtin_clzll(static_cast<unsigned long long>(V)) : 1;
    size_t sort_bytes = 0;
    GANTRY_CUDA_RETURN_IF_ERROR(cub::DeviceRadixSort::SortPairs(
        nullptr, sort_bytes, static_cast<const int32_t*>(nullptr), static_cast<int32_t*>(nullptr),
        static_cast<const int32_t*>(nullptr), static_cast<int32_t*>(nullptr), int(N), 0, bits,
        env.stream));
    const size_t arr = (size_t(N) * sizeof(int32_t) + 255) / 256 * 256;
    GANTRY_ASSIGN_OR_RETURN(void* scratch, Scratch(env.ctx, 4 * arr + sort_bytes));
    char* base = static_cast<char*>(scratch);
    int32_t* keys_in = reinterpret_cast<int32_t*>(base);
    int32_t* pos_in = reinterpret_cast<int32_t*>(base + arr);
    int32_t* keys = reinterpret_cast<int32_t*>(base + 2 * arr);
    int32_t* pos = reinterpret_cast<int32_t*>(base + 3 * arr);
    void* sort_tmp = base + 4 * arr;
    GANTRY_RETURN_IF_ERROR(LaunchElementwise(N, env.stream, [=] __device__(int64_t i) {
      const int32_t id = tok[i];
      const bool bad = id < 0 || id >= V;
      if (bad) ReportBadIndex(err, IndexOp::kEmbeddingBackward, i, id, V);
      keys_in[i] = bad ? int32_t(V) : id;
      pos_in[i] = int32_t(i);
    }));
    GANTRY_CUDA_RETURN_IF_ERROR(cub::DeviceRadixSort::SortPairs(
        sort_tmp, sort_bytes, keys_in, keys, pos_in, pos, int(N), 0, bits, env.stream));
    GANTRY_RETURN_IF_ERROR(LaunchElementwise(N * C, env.stream, [=] __device__(int64_t i) {
      const int64_t s = i / C, c = i % C;
      const int32_t id = keys[s];
      if (id >= V || (s > 0 && keys[s - 1] == id)) return;  // not the start of a run
      float sum = 0.0f;
      for (int64_t j = s; j < N && keys[j] == id; ++j) sum += pd[int64_t(pos[j]) * C + c];
      pte[int64_t(id) * C + c] += sum;
    }));
  }
  if (dwpe == nullptr) return OkStatus();
  float* ppe = dwpe->f32();
  return LaunchElementwise(T * C, env.stream, [=] __device__(int64_t i) {
    float s = 0.0f;
    for (int64_t b = 0; b < B; ++b) s += pd[b * T * C + i];
    ppe[i] += s;
  });
}

}  // namespace gantry::kernels::cuda
