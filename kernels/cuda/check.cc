// Error converters: library error code -> kDeviceError Status with message and location.
#include "kernels/cuda/check.h"

#include <string>

namespace gantry::kernels::cuda {
namespace {

Status DeviceError(std::string lib_message, const char* expr, const char* file, int line) {
  Status s(StatusCode::kDeviceError, std::move(lib_message) + " in `" + expr + "`");
  s.AddLocation(file, line);
  return s;
}

}  // namespace

Status CudaStatus(cudaError_t err, const char* expr, const char* file, int line) {
  std::string msg = std::string("CUDA error ") + cudaGetErrorName(err) + " (" +
                    std::to_string(static_cast<int>(err)) + "): " + cudaGetErrorString(err);
  if (err == cudaErrorNoDevice || err == cudaErrorInsufficientDriver) {
    msg += " (no usable GPU/driver: check nvidia-smi, or run on cpu)";
  } else if (err == cudaErrorMemoryAllocation) {
    msg += " (device out of memory: reduce the batch size)";
  }
  return DeviceError(std::move(msg), expr, file, line);
}

Status CublasStatus(cublasStatus_t err, const char* expr, const char* file, int line) {
  std::string msg = std::string("cuBLAS error ") + cublasGetStatusName(err) + " (" +
                    std::to_string(static_cast<int>(err)) + "): " + cublasGetStatusString(err);
  return DeviceError(std::move(msg), expr, file, line);
}

Status CudnnStatus(cudnnStatus_t err, const char* expr, const char* file, int line) {
  std::string msg = std::string("cuDNN error (") + std::to_string(static_cast<int>(err)) +
                    "): " + cudnnGetErrorString(err);
  char last[256] = {0};
  cudnnGetLastErrorString(last, sizeof(last));
  if (last[0] != '\0') msg += std::string(" [") + last + "]";
  return DeviceError(std::move(msg), expr, file, line);
}

}  // namespace gantry::kernels::cuda
