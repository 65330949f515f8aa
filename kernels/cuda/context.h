// Per-thread, per-device CUDA state used by every op: cuBLAS/cuDNN handles, a reusable device
// scratch buffer (row partials of reductions), a pinned host word for results the host must
// read, and the device's deferred index-error slot. Handles are pooled per device and reused
// across threads; they are never destroyed (destroying them at process exit races CUDA's own
// teardown, as PyTorch also found). Not for use outside kernels/cuda.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <cudnn.h>

#include <cstddef>
#include <cstdint>

#include "base/status.h"
#include "kernels/tensor.h"

namespace gantry::kernels::cuda {

inline constexpr int kMaxDevices = 16;

// Ops that read indices on the device; a kernel records the first out-of-range one.
enum class IndexOp : int {
  kNone = 0,
  kEmbeddingForward,
  kEmbeddingBackward,
  kCrossEntropyForward,
  kCrossEntropyBackward,
  kHingeForward,
  kHingeBackward,
};
// Lives in mapped pinned host memory: kernels write it, the host reads it without a sync.
struct IndexError {
  int op;             // IndexOp; 0 = none (claimed with atomicCAS)
  int pad;
  long long position; // flat position of the bad index in its tensor
  long long value;
  long long bound;    // valid range is [0, bound)
};

struct Context {
  int device = 0;
  cublasHandle_t cublas = nullptr;
  cudnnHandle_t cudnn = nullptr;  // created on first conv
  void* scratch = nullptr;        // device memory, reused; ordered by the current stream
  size_t scratch_bytes = 0;
  void* gemm_scratch = nullptr;   // bf16 copies of GEMM operands (GemmRowMajor only)
  size_t gemm_scratch_bytes = 0;
  double* host_result = nullptr;  // pinned host memory, 8 doubles
};

// Everything a launcher needs, resolved once per op call.
struct OpEnv {
  Context* ctx = nullptr;
  cudaStream_t stream = nullptr;
  int device = 0;
  IndexError* index_error = nullptr;  // device-visible pointer
};

// Checks `t` is a cuda tensor, makes its device current, reports a pending index error from an
// earlier call on that device (unless `take_index_error` is false: for probes such as
// Conv2dWorkspaceElements that cannot return it, so the next op still does), and returns the
// thread's context and current stream. Also clears this thread's last CUDA error left by
// unrelated runtime calls (e.g. cudaErrorNotReady from an event query), so each launch check
// reports only its own launch; sticky errors still surface on the next runtime call.
StatusOr<OpEnv> BeginOp(const char* op, const Tensor& t, bool take_index_error = true);
// Checks `t` has `dtype` and lives on env's device (the dispatchers check shapes; this guards
// what the kernels index with). Message names the op and the tensor.
Status CheckOperand(const char* op, const char* name, const Tensor& t, const OpEnv& env,
                    DType dtype = DType::kF32);
// Makes `device` current for this thread (cudaSetDevice only when it differs).
Status UseDevice(int device);
// Device scratch of at least `bytes` (grows by reallocating; never shrinks).
StatusOr<void*> Scratch(Context* ctx, size_t bytes);
// The same for GemmRowMajor's bf16 operand copies (separate, so a caller may hold Scratch
// across a GEMM).
StatusOr<void*> GemmScratch(Context* ctx, size_t bytes);
// Returns and clears the pending index error of `device` as kInvalidArgument (OK if none).
Status TakeIndexError(int device);
// GANTRY_CUDA_TF32=1 lets cuBLAS/cuDNN use TF32 tensor cores for f32 (faster, ~1e-3 error);
// default 0 keeps full f32 so results match the CPU backend to ~1e-5.
bool UseTf32();
cudaStream_t CurrentCudaStream();

// Launch geometry for elementwise kernels over n elements (grid-stride loops inside).
inline constexpr int kBlock = 256;
inline unsigned GridFor(int64_t n, int block = kBlock) {
  int64_t g = (n + block - 1) / block;
  if (g < 1) g = 1;
  return static_cast<unsigned>(g > 65535LL * 16 ? 65535LL * 16 : g);
}

}  // namespace gantry::kernels::cuda
