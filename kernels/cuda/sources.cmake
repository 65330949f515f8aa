# CUDA backend sources (relative to kernels/) and libraries; included by kernels/CMakeLists.txt
# when GANTRY_HAVE_CUDA. Host-only files are .cc, device code is .cu (one per op family).
set(GANTRY_KERNELS_CUDA_SOURCES
  cuda/check.cc
  cuda/context.cc
  cuda/memory.cu
  cuda/gemm.cc
  cuda/linear.cu
  cuda/activation.cu
  cuda/norm.cu
  cuda/attention.cu
  cuda/embedding.cu
  cuda/loss.cu
  cuda/optim.cu
  cuda/pool.cu
  cuda/conv.cu
)
set(GANTRY_KERNELS_CUDA_LIBS CUDA::cudart CUDA::cublas CUDA::cublasLt gantry_cudnn)

# CMake < 3.26 does not know nvcc's C++20 flag and silently compiles .cu files as C++17, which
# cannot parse kernels/tensor.h. Directory scope: applies to the including folder's targets.
if(NOT CMAKE_CUDA_FLAGS MATCHES "-std=c\\+\\+20")
  string(APPEND CMAKE_CUDA_FLAGS " -std=c++20")
endif()
string(APPEND CMAKE_CUDA_FLAGS " --expt-relaxed-constexpr --extended-lambda")
