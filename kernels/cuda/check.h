// Error converters for the CUDA runtime, cuBLAS and cuDNN: each keeps the library's own error
// name and message plus the failing expression and file:line, as a kDeviceError Status.
// Use the macros; they return from the enclosing function (which returns Status or StatusOr).
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <cudnn.h>

#include "base/status.h"

namespace gantry::kernels::cuda {

Status CudaStatus(cudaError_t err, const char* expr, const char* file, int line);
Status CublasStatus(cublasStatus_t err, const char* expr, const char* file, int line);
Status CudnnStatus(cudnnStatus_t err, const char* expr, const char* file, int line);

}  // namespace gantry::kernels::cuda

#define GANTRY_CUDA_RETURN_IF_ERROR(expr)                                               \
  do {                                                                                  \
    cudaError_t gantry_cuda_err_ = (expr);                                              \
    if (gantry_cuda_err_ != cudaSuccess)                                                \
      return ::gantry::kernels::cuda::CudaStatus(gantry_cuda_err_, #expr, __FILE__, __LINE__); \
  } while (0)

#define GANTRY_CUBLAS_RETURN_IF_ERROR(expr)                                             \
  do {                                                                                  \
    cublasStatus_t gantry_cublas_err_ = (expr);                                         \
    if (gantry_cublas_err_ != CUBLAS_STATUS_SUCCESS)                                    \
      return ::gantry::kernels::cuda::CublasStatus(gantry_cublas_err_, #expr, __FILE__, __LINE__); \
  } while (0)

#define GANTRY_CUDNN_RETURN_IF_ERROR(expr)                                              \
  do {                                                                                  \
    cudnnStatus_t gantry_cudnn_err_ = (expr);                                           \
    if (gantry_cudnn_err_ != CUDNN_STATUS_SUCCESS)                                      \
      return ::gantry::kernels::cuda::CudnnStatus(gantry_cudnn_err_, #expr, __FILE__, __LINE__); \
  } while (0)

// After a <<<...>>> launch: reports a bad launch configuration (not asynchronous faults).
#define GANTRY_CUDA_CHECK_LAUNCH(name) GANTRY_CUDA_RETURN_IF_ERROR(cudaGetLastError())
