// Internal to kernels/: the checks every public op runs before choosing a backend, and the
// dispatch macro (CUDA tensors -> kernels/cuda, host tensors -> kernels/cpu). Not installed.
#pragma once

#include <initializer_list>
#include <string>
#include <utility>

#include "kernels/cpu/cpu_ops.h"
#include "kernels/tensor.h"
#if GANTRY_KERNELS_WITH_CUDA  // set by kernels/CMakeLists.txt when kernels/cuda is built
#include "kernels/cuda/cuda_ops.h"
#endif

namespace gantry::kernels::internal {

using Named = std::pair<const char*, const Tensor*>;

// Each non-null tensor is defined and has `dtype`.
inline Status CheckDTypes(const char* op, DType dtype, std::initializer_list<Named> tensors) {
  for (const Named& t : tensors) {
    if (t.second != nullptr) GANTRY_RETURN_IF_ERROR(CheckDType(op, t.first, *t.second, dtype));
  }
  return OkStatus();
}

// `t` has `numel` elements (the op views it with another shape).
inline Status CheckNumel(const char* op, const char* name, const Tensor& t, int64_t numel) {
  if (t.numel() != numel) {
    return InvalidArgumentError(std::string(op) + ": tensor '" + name + "' has shape " +
                                ShapeToString(t.shape()) + " (" + std::to_string(t.numel()) +
                                " elements) but " + std::to_string(numel) +
                                " elements are required");
  }
  return OkStatus();
}

// Rank >= 1 and a last dim > 0, so rows = numel / last dim is defined.
inline Status CheckHasLastDim(const char* op, const char* name, const Tensor& t) {
  if (t.rank() == 0 || t.dim(-1) <= 0) {
    return InvalidArgumentError(std::string(op) + ": tensor '" + name + "' has shape " +
                                ShapeToString(t.shape()) + "; a non-empty last dim is required");
  }
  return OkStatus();
}

// Defined with exactly `rank` dims.
inline Status CheckRank(const char* op, const char* name, const Tensor& t, int rank) {
  GANTRY_RETURN_IF_ERROR(CheckDTypes(op, t.dtype(), {{name, &t}}));
  if (t.rank() != rank) {
    return InvalidArgumentError(std::string(op) + ": tensor '" + name + "' has shape " +
                                ShapeToString(t.shape()) + " but rank " + std::to_string(rank) +
                                " is required");
  }
  return OkStatus();
}

inline Status NoCudaError(const char* op, Device device) {
  return FailedPreconditionError(std::string(op) + " on " + device.ToString() +
                                 ": this build has no CUDA support (rebuild with "
                                 "GANTRY_WITH_CUDA=ON or run on cpu)");
}

}  // namespace gantry::kernels::internal

// Returns backend::call for the backend owning `device`. `call` is the op call expression
// without namespace, e.g. GANTRY_KERNELS_DISPATCH("Matmul", a.device(), Matmul(a, b, c, o)).
#if GANTRY_KERNELS_WITH_CUDA
#define GANTRY_KERNELS_DISPATCH(op, device, call) \
  do {                                            \
    if ((device).is_cuda()) return cuda::call;    \
    return cpu::call;                             \
  } while (0)
#else
#define GANTRY_KERNELS_DISPATCH(op, device, call)                               \
  do {                                                                          \
    if ((device).is_cuda()) return ::gantry::kernels::internal::NoCudaError(op, (device)); \
    return cpu::call;                                                           \
  } while (0)
#endif
