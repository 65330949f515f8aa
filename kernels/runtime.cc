// Kernel runtime: CPU thread count (GANTRY_NUM_THREADS or all cores, applied to OpenMP and so
// to oneDNN), CUDA discovery and synchronisation through kernels/cuda, per-thread stream.
#include "kernels/runtime.h"

#include <omp.h>

#include <atomic>
#include <cstdlib>
#include <thread>

#if GANTRY_KERNELS_WITH_CUDA  // set by kernels/CMakeLists.txt when kernels/cuda is built
#include "kernels/cuda/cuda_ops.h"
#endif

namespace gantry::kernels {

namespace {

int DefaultThreads() {
  if (const char* env = std::getenv("GANTRY_NUM_THREADS")) {
    int n = std::atoi(env);
    if (n > 0) return n;
  }
  int cores = omp_get_num_procs();  // respects the affinity mask (taskset, cgroups cpusets)
  if (cores <= 0) cores = static_cast<int>(std::thread::hardware_concurrency());
  return cores > 0 ? cores : 1;
}

std::atomic<int>& ThreadsSetting() {
  static std::atomic<int> threads{[] {
    int n = DefaultThreads();
    omp_set_num_threads(n);
    return n;
  }()};
  return threads;
}

thread_local void* current_stream = nullptr;

}  // namespace

void SetNumThreads(int threads) {
  if (threads <= 0) threads = DefaultThreads();
  ThreadsSetting().store(threads);
  omp_set_num_threads(threads);
}

int NumThreads() { return ThreadsSetting().load(std::memory_order_relaxed); }

int CudaDeviceCount() {
#if GANTRY_KERNELS_WITH_CUDA
  return cuda::DeviceCount();
#else
  return 0;
#endif
}

bool BuiltWithCuda() { return GANTRY_KERNELS_WITH_CUDA != 0; }

Status Synchronize(Device device) {
  if (device.is_cpu()) return OkStatus();
#if GANTRY_KERNELS_WITH_CUDA
  return cuda::Synchronize(device.index);
#else
  return FailedPreconditionError("Synchronize(" + device.ToString() +
                                 "): this build has no CUDA support");
#endif
}

void SetCurrentStream(void* cuda_stream) { current_stream = cuda_stream; }
void* CurrentStream() { return current_stream; }

}  // namespace gantry::kernels
