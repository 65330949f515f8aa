// Process-wide kernel runtime settings: CPU thread count, CUDA device discovery, sync.
// CPU ops run on Gantry's own thread pool (kernels/cpu/parallel.h; oneDNN is called
// single-threaded per tile) with NumThreads() threads; CUDA ops run on the calling thread's
// current stream (default stream unless SetCurrentStream was called on that thread).
#pragma once

#include <cstdint>
#include <string>

#include "base/status.h"
#include "kernels/tensor.h"

namespace gantry::kernels {

// Threads used by CPU ops (the kernel thread pool). Default: GANTRY_NUM_THREADS or all cores.
void SetNumThreads(int threads);
int NumThreads();
// CPUs this process may run on (its affinity mask: taskset, cgroup cpusets).
int UsableCpus();

// Precision of CPU matrix products (every GEMM of the CPU ops: linear layers, convolutions;
// attention's per-head products run in its own f32 kernels whatever this says).
// kBf16 is mixed precision as torch.autocast(bfloat16) does it: inputs rounded to bf16,
// products accumulated and stored in f32 (oneDNN's AMX / AVX512-BF16 kernels); parameters,
// gradients and everything else stay f32. Process-wide; set it before training starts.
enum class MatmulPrecision { kF32, kBf16 };
// kUnimplemented for kBf16 in a build without oneDNN. With kBf16, products of fewer than
// `bf16_min_flops` (2mnk) stay f32: for attention's per-head blocks (<= 0.5 MFLOP in gpt-tiny)
// the bf16 path's per-call cost (casts, primitive launch) exceeds its gain (gpt-tiny 7.5k ->
// 8.7k tokens/s at one thread with them in f32); they are then more precise, not less.
// Default: GANTRY_BF16_MIN_FLOPS or 4e6; tests pass 0 to send every product through bf16.
Status SetCpuMatmulPrecision(MatmulPrecision precision, double bf16_min_flops = -1);
MatmulPrecision CpuMatmulPrecision();
double Bf16MinFlops();
// kBf16: matrices inside [begin, begin + bytes) are parameters; their bf16 copies are made
// once per weights epoch and reused by every product that reads them (a gpt's tied lm_head
// weight is read by 8 row blocks forward and twice in backward). Start a new epoch whenever
// parameters may have changed (the trainer does at every step; a parameter range updated
// inside backward is never read again in that step). bytes = 0 clears the range.
//
// The copies live in one bf16 array the size of the range, which the optimizer can fill as it
// updates (MatmulWeightsBf16Copy): when, since the last epoch began, it wrote the copy of
// every parameter exactly once, the new epoch takes the copy as it is and casts nothing
// (mlp-mnist bf16: the weight casts were ~5% of a step). Otherwise (a sharded optimizer
// updates only its shard) each matrix is cast on first use, as before.
void SetMatmulWeights(const void* begin, size_t bytes);
// Clears the range if it is still the one that starts at `begin` (its owner is going away: a
// later product on reused memory must not take the old copy).
void ClearMatmulWeightsIf(const void* begin);
void NewMatmulWeightsEpoch();
// A new epoch after parameters were written by anything but the optimizer (a checkpoint
// restore, a broadcast): the copy is stale whatever the optimizer wrote before.
void NewMatmulWeightsEpochAfterLoad();
// Where the optimizer writes the bf16 rounding (round to nearest even, the same bits as the
// GEMMs' own casts) of parameters [p, p + n) it updates; nullptr when that span is not inside
// the range or CPU products are f32. After the update succeeded, report it with
// MatmulWeightsBf16CopyWritten(n): those reports, once per parameter since the epoch began,
// are what makes the next epoch take the copy.
uint16_t* MatmulWeightsBf16Copy(const float* p, int64_t n);
void MatmulWeightsBf16CopyWritten(int64_t n);
// Precision of CUDA matrix products (linear layers; attention's per-head products stay f32 as
// on the CPU, convolutions (cuDNN) stay f32 too). kBf16 has the CPU's semantics: both inputs of a
// product of at least `bf16_min_flops` (2mnk per product, -1: GANTRY_BF16_MIN_FLOPS or 4e6, as
// on the CPU, so CPU and GPU runs round the same products) are rounded to bf16 (round to
// nearest even) and cuBLAS multiplies them on the tensor cores, accumulating and storing in
// f32. kUnimplemented for kBf16 without CUDA.
Status SetCudaMatmulPrecision(MatmulPrecision precision, double bf16_min_flops = -1);
MatmulPrecision CudaMatmulPrecision();
double CudaBf16MinFlops();
// Process-wide, for a job computing on `device`: that device's products get `precision`, the
// other device's f32 (so the CPU ops of a GPU job, e.g. evaluation on the host, stay exact).
Status SetMatmulPrecisionFor(Device device, MatmulPrecision precision);
// A short description of the CPU's bf16 support ("amx_bf16", "avx512_bf16" or "emulated").
std::string CpuBf16Support();

// Number of usable CUDA devices: 0 when built without CUDA or when no GPU/driver is present.
int CudaDeviceCount();
struct CudaDeviceProperties {
  std::string name;           // "NVIDIA H200"
  uint64_t memory_bytes = 0;  // total device memory
  int compute_major = 0;      // compute capability, e.g. 9.0
  int compute_minor = 0;
};
// Properties of CUDA device `index`; kInvalidArgument for an index >= CudaDeviceCount(),
// kUnimplemented when built without CUDA.
StatusOr<CudaDeviceProperties> GetCudaDeviceProperties(int index);
// True when built with CUDA support (whether or not a GPU is present).
bool BuiltWithCuda();

// Blocks until all work queued on `device` by this thread has finished (no-op on cpu).
Status Synchronize(Device device);

// Stream used by CUDA ops issued from this thread (an opaque cudaStream_t; nullptr = default).
void SetCurrentStream(void* cuda_stream);
void* CurrentStream();

}  // namespace gantry::kernels
