// Per-thread CUDA contexts (pooled handles, scratch), device selection and index errors.
#include "kernels/cuda/context.h"

#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "base/tunables.h"
#include "kernels/cuda/check.h"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/runtime.h"

namespace gantry::kernels::cuda {
namespace {

// Free contexts per device; leaked on purpose (see context.h).
struct Pool {
  std::mutex mu;
  std::vector<Context*> free[kMaxDevices];
  IndexError* index_error[kMaxDevices] = {};      // host pointers of the mapped slots
  IndexError* index_error_dev[kMaxDevices] = {};  // the same slots as device pointers
};
Pool& GlobalPool() {
  static Pool* pool = new Pool();
  return *pool;
}

// This thread's contexts; returned to the pool when the thread exits.
struct ThreadContexts {
  Context* by_device[kMaxDevices] = {};
  ~ThreadContexts() {
    Pool& pool = GlobalPool();
    std::lock_guard<std::mutex> lock(pool.mu);
    for (int d = 0; d < kMaxDevices; ++d) {
      if (by_device[d] != nullptr) pool.free[d].push_back(by_device[d]);
    }
  }
};
thread_local ThreadContexts tls_contexts;

StatusOr<Context*> CreateContext(int device) {
  auto ctx = std::make_unique<Context>();
  ctx->device = device;
  GANTRY_CUBLAS_RETURN_IF_ERROR(cublasCreate(&ctx->cublas));
  Status st = [&]() -> Status {  // the handle is destroyed if the rest fails
    GANTRY_CUBLAS_RETURN_IF_ERROR(cublasSetMathMode(
        ctx->cublas, UseTf32() ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH));
    GANTRY_CUDA_RETURN_IF_ERROR(cudaHostAlloc(reinterpret_cast<void**>(&ctx->host_result),
                                              8 * sizeof(double), cudaHostAllocDefault));
    return OkStatus();
  }();
  if (!st.ok()) {
    cublasDestroy(ctx->cublas);
    return st;
  }
  return ctx.release();
}

StatusOr<Context*> GetContext(int device) {
  Context*& slot = tls_contexts.by_device[device];
  if (slot != nullptr) return slot;
  {
    Pool& pool = GlobalPool();
    std::lock_guard<std::mutex> lock(pool.mu);
    if (!pool.free[device].empty()) {
      slot = pool.free[device].back();
      pool.free[device].pop_back();
      return slot;
    }
  }
  GANTRY_ASSIGN_OR_RETURN(slot, CreateContext(device));
  return slot;
}

// Host pointer of the slot of `device`; `dev_ptr` (optional) receives its device pointer.
StatusOr<IndexError*> IndexErrorSlot(int device, IndexError** dev_ptr = nullptr) {
  Pool& pool = GlobalPool();
  std::lock_guard<std::mutex> lock(pool.mu);
  if (pool.index_error[device] == nullptr) {
    void* host = nullptr;
    void* dev = nullptr;
    GANTRY_CUDA_RETURN_IF_ERROR(cudaHostAlloc(&host, sizeof(IndexError), cudaHostAllocMapped));
    std::memset(host, 0, sizeof(IndexError));
    if (cudaError_t err = cudaHostGetDevicePointer(&dev, host, 0); err != cudaSuccess) {
      cudaFreeHost(host);
      GANTRY_CUDA_RETURN_IF_ERROR(err);
    }
    pool.index_error[device] = static_cast<IndexError*>(host);
    pool.index_error_dev[device] = static_cast<IndexError*>(dev);
  }
  if (dev_ptr != nullptr) *dev_ptr = pool.index_error_dev[device];
  return pool.index_error[device];
}

const char* IndexOpName(int op) {
  switch (static_cast<IndexOp>(op)) {
    case IndexOp::kEmbeddingForward: return "EmbeddingForward: token";
    case IndexOp::kEmbeddingBackward: return "EmbeddingBackward: token";
    case IndexOp::kCrossEntropyForward: return "CrossEntropyForward: target";
    case IndexOp::kCrossEntropyBackward: return "CrossEntropyBackward: target";
    case IndexOp::kHingeForward: return "HingeForward: target";
    case IndexOp::kHingeBackward: return "HingeBackward: target";
    default: return "index";
  }
}

}  // namespace

bool UseTf32() {
  static const bool tf32 = TunableBool("CUDA_TF32", false);
  return tf32;
}

cudaStream_t CurrentCudaStream() { return static_cast<cudaStream_t>(kernels::CurrentStream()); }

Status UseDevice(int device) {
  if (device < 0 || device >= kMaxDevices || device >= DeviceCount()) {
    return InvalidArgumentError("cuda:" + std::to_string(device) + " does not exist (" +
                                std::to_string(DeviceCount()) +
                                " usable GPUs); pick a device below that count");
  }
  int current = -1;
  GANTRY_CUDA_RETURN_IF_ERROR(cudaGetDevice(&current));
  if (current != device) GANTRY_CUDA_RETURN_IF_ERROR(cudaSetDevice(device));
  return OkStatus();
}

Status TakeIndexError(int device) {
  GANTRY_ASSIGN_OR_RETURN(IndexError * slot, IndexErrorSlot(device));
  // One taker at a time: two threads on a device must not both report (or half-clear) it.
  static std::mutex taking;
  std::lock_guard<std::mutex> lock(taking);
  volatile IndexError* e = slot;
  if (e->op <= 0) return OkStatus();  // -1: a kernel is still filling the record in
  std::string msg = std::string(IndexOpName(e->op)) + " at flat position " +
                    std::to_string(e->position) + " is " + std::to_string(e->value) +
                    ", outside [0, " + std::to_string(e->bound) +
                    ") (found on cuda:" + std::to_string(device) +
                    " by an earlier call; outputs of that call hold NaN): fix the data";
  e->position = 0;
  e->value = 0;
  e->bound = 0;
  e->op = 0;
  return InvalidArgumentError(std::move(msg));
}

StatusOr<OpEnv> BeginOp(const char* op, const Tensor& t, bool take_index_error) {
  if (!t.device().is_cuda()) {
    return InvalidArgumentError(std::string(op) + ": tensor " + t.ToString() +
                                " is not on a cuda device; the CUDA backend got a host tensor");
  }
  // A stale non-sticky error (cudaErrorNotReady from a cudaEventQuery/cudaStreamQuery poll,
  // e.g. NCCL's Work::Wait on this thread) would otherwise fail this op's launch check.
  (void)cudaGetLastError();
  OpEnv env;
  env.device = t.device().index;
  GANTRY_RETURN_IF_ERROR(UseDevice(env.device));
  if (take_index_error) GANTRY_RETURN_IF_ERROR(TakeIndexError(env.device));
  GANTRY_ASSIGN_OR_RETURN(env.ctx, GetContext(env.device));
  GANTRY_RETURN_IF_ERROR(IndexErrorSlot(env.device, &env.index_error).status());
  env.stream = CurrentCudaStream();
  return env;
}

Status CheckOperand(const char* op, const char* name, const Tensor& t, const OpEnv& env,
                    DType dtype) {
  if (t.dtype() != dtype || !t.device().is_cuda() || t.device().index != env.device) {
    return InvalidArgumentError(std::string(op) + ": " + name + " is " + t.ToString() +
                                ", expected " + DTypeName(dtype) + " on cuda:" +
                                std::to_string(env.device));
  }
  if (t.raw() == nullptr && t.numel() > 0) {
    return InvalidArgumentError(std::string(op) + ": " + name + " has no memory");
  }
  return OkStatus();
}

namespace {
StatusOr<void*> Grow(void*& buffer, size_t& size, size_t bytes) {
  if (bytes <= size) return buffer;
  size_t grown = size * 2 > bytes ? size * 2 : bytes;
  if (buffer != nullptr) {
    // cudaFree waits for queued work that may still read the old buffer.
    GANTRY_CUDA_RETURN_IF_ERROR(cudaFree(buffer));
    buffer = nullptr;
    size = 0;
  }
  GANTRY_CUDA_RETURN_IF_ERROR(cudaMalloc(&buffer, grown));
  size = grown;
  return buffer;
}
}  // namespace

StatusOr<void*> Scratch(Context* ctx, size_t bytes) {
  return Grow(ctx->scratch, ctx->scratch_bytes, bytes);
}
StatusOr<void*> GemmScratch(Context* ctx, size_t bytes) {
  return Grow(ctx->gemm_scratch, ctx->gemm_scratch_bytes, bytes);
}

}  // namespace gantry::kernels::cuda
