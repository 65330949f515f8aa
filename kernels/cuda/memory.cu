// CUDA runtime calls behind Tensor/Buffer: device count, malloc/free, copies, zero, sync, Cast.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <mutex>
#include <string>

#include "kernels/cuda/check.h"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/context.h"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/gemm.h"

namespace gantry::kernels::cuda {
namespace {

template <typename T> __device__ __forceinline__ float ToF32(T v);
template <> __device__ __forceinline__ float ToF32(float v) { return v; }
template <> __device__ __forceinline__ float ToF32(__nv_bfloat16 v) { return __bfloat162float(v); }
template <> __device__ __forceinline__ float ToF32(__half v) { return __half2float(v); }

template <typename T> __device__ __forceinline__ T FromF32(float v);
template <> __device__ __forceinline__ float FromF32(float v) { return v; }
template <> __device__ __forceinline__ __nv_bfloat16 FromF32(float v) { return __float2bfloat16_rn(v); }
template <> __device__ __forceinline__ __half FromF32(float v) { return __float2half_rn(v); }

template <typename S, typename D>
__global__ void CastKernel(const S* __restrict__ src, D* __restrict__ dst, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    dst[i] = FromF32<D>(ToF32(src[i]));
  }
}

template <typename S, typename D>
Status LaunchCast(const Tensor& src, Tensor& dst, cudaStream_t stream) {
  const int64_t n = src.numel();
  CastKernel<S, D><<<GridFor(n), kBlock, 0, stream>>>(src.data<S>(), dst.data<D>(), n);
  GANTRY_CUDA_CHECK_LAUNCH("Cast");
  return OkStatus();
}

template <typename S>
Status CastFrom(const Tensor& src, Tensor& dst, cudaStream_t stream) {
  switch (dst.dtype()) {
    case DType::kF32: return LaunchCast<S, float>(src, dst, stream);
    case DType::kBF16: return LaunchCast<S, __nv_bfloat16>(src, dst, stream);
    case DType::kF16: return LaunchCast<S, __half>(src, dst, stream);
    default: break;
  }
  return InvalidArgumentError(std::string("Cast: destination ") + dst.ToString() +
                              " must be f32, bf16 or f16");
}

}  // namespace

int DeviceCount() {
  static int count = [] {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
      (void)cudaGetLastError();  // clear the sticky "no driver" error
      return 0;
    }
    return n < kMaxDevices ? n : kMaxDevices;
  }();
  return count;
}

StatusOr<CudaDeviceProperties> DeviceProperties(int device) {
  if (device < 0 || device >= DeviceCount()) {
    return InvalidArgumentError("DeviceProperties: cuda:" + std::to_string(device) +
                                " does not exist (" + std::to_string(DeviceCount()) +
                                " devices)");
  }
  cudaDeviceProp prop{};
  cudaError_t err = cudaGetDeviceProperties(&prop, device);
  if (err != cudaSuccess) {
    (void)cudaGetLastError();
    return Status(StatusCode::kDeviceError, std::string("cudaGetDeviceProperties(cuda:") +
                                                std::to_string(device) + "): " +
                                                cudaGetErrorString(err));
  }
  CudaDeviceProperties p;
  p.name = prop.name;
  p.memory_bytes = prop.totalGlobalMem;
  p.compute_major = prop.major;
  p.compute_minor = prop.minor;
  return p;
}

Status Malloc(void** ptr, size_t bytes, int device) {
  *ptr = nullptr;
  if (bytes == 0) return OkStatus();
  GANTRY_RETURN_IF_ERROR(UseDevice(device));
  cudaError_t err = cudaMalloc(ptr, bytes);
  if (err != cudaSuccess) {
    (void)cudaGetLastError();
    Status s = CudaStatus(err, "cudaMalloc", __FILE__, __LINE__);
    s.Prepend("allocating " + std::to_string(bytes) + " bytes on cuda:" + std::to_string(device));
    return s;
  }
  return OkStatus();
}

void Free(void* ptr, int device) {
  if (ptr == nullptr) return;
  if (UseDevice(device).ok()) (void)cudaFree(ptr);
}

Status Memcpy(void* dst, Device dst_device, const void* src, Device src_device, size_t bytes) {
  if (bytes == 0) return OkStatus();
  const Device& gpu = dst_device.is_cuda() ? dst_device : src_device;
  if (!gpu.is_cuda()) {
    return InvalidArgumentError("cuda::Memcpy: both sides are host memory; use std::memcpy");
  }
  GANTRY_RETURN_IF_ERROR(UseDevice(gpu.index));
  cudaStream_t stream = CurrentCudaStream();
  if (dst_device.is_cuda() && src_device.is_cuda()) {
    if (dst_device.index == src_device.index) {
      GANTRY_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream));
    } else {
      GANTRY_CUDA_RETURN_IF_ERROR(cudaMemcpyPeerAsync(dst, dst_device.index, src,
                                                      src_device.index, bytes, stream));
    }
    return OkStatus();
  }
  const cudaMemcpyKind kind =
      dst_device.is_cuda() ? cudaMemcpyHostToDevice : cudaMemcpyDeviceToHost;
  GANTRY_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(dst, src, bytes, kind, stream));
  // Host memory may be pinned (then the copy is truly async): wait so the caller can reuse it.
  GANTRY_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream));
  // Synchronised anyway: report a bad index found by an earlier op now, so that the value
  // read here (e.g. a loss that holds NaN because of it) is not taken for a result.
  return TakeIndexError(gpu.index);
}

Status MemsetZero(void* ptr, size_t bytes, int device) {
  if (bytes == 0) return OkStatus();
  GANTRY_RETURN_IF_ERROR(UseDevice(device));
  GANTRY_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(ptr, 0, bytes, CurrentCudaStream()));
  return OkStatus();
}

Status Synchronize(int device) {
  GANTRY_RETURN_IF_ERROR(UseDevice(device));
  GANTRY_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(CurrentCudaStream()));
  return TakeIndexError(device);
}

Status CastToBf16(const float* src, void* dst, int64_t n, cudaStream_t stream) {
  if (n <= 0) return OkStatus();
  CastKernel<float, __nv_bfloat16>
      <<<GridFor(n), kBlock, 0, stream>>>(src, static_cast<__nv_bfloat16*>(dst), n);
  GANTRY_CUDA_CHECK_LAUNCH("CastToBf16");
  return OkStatus();
}

// c[b * stride_c + i * ldc + j] = beta * c[...] for b < batch, i < m, j < n; beta == 0 writes
// zeros (NaN or Inf in c do not survive), as BLAS does for k == 0.
__global__ void ScaleMatrixKernel(float* c, int64_t m, int64_t n, int64_t ldc, int64_t stride_c,
                                  int64_t total, float beta) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t j = i % n, row = (i / n) % m, b = i / (n * m);
    float& v = c[b * stride_c + row * ldc + j];
    v = beta == 0.0f ? 0.0f : beta * v;
  }
}

Status ScaleMatrices(float* c, int64_t m, int64_t n, int64_t ldc, int64_t stride_c, int64_t batch,
                     float beta, cudaStream_t stream) {
  const int64_t total = m * n * batch;
  if (total <= 0 || beta == 1.0f) return OkStatus();
  ScaleMatrixKernel<<<GridFor(total), kBlock, 0, stream>>>(c, m, n, ldc, stride_c, total, beta);
  GANTRY_CUDA_CHECK_LAUNCH("ScaleMatrices");
  return OkStatus();
}

Status Cast(const Tensor& src, Tensor& dst) {
  GANTRY_ASSIGN_OR_RETURN(OpEnv env, BeginOp("Cast", src));
  if (!dst.device().is_cuda() || dst.device().index != env.device || dst.numel() != src.numel()) {
    return InvalidArgumentError("Cast: " + src.ToString() + " -> " + dst.ToString() +
                                " needs the same cuda device and element count");
  }
  if (src.numel() == 0) return OkStatus();
  switch (src.dtype()) {
    case DType::kF32: return CastFrom<float>(src, dst, env.stream);
    case DType::kBF16: return CastFrom<__nv_bfloat16>(src, dst, env.stream);
    case DType::kF16: return CastFrom<__half>(src, dst, env.stream);
    default: break;
  }
  return InvalidArgumentError("Cast: source " + src.ToString() + " must be f32, bf16 or f16");
}

}  // namespace gantry::kernels::cuda
