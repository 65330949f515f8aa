// Kernel runtime: CPU thread count (GANTRY_NUM_THREADS or all cores), the CPU backend's
// persistent thread pool (kernels/cpu/parallel.h; design notes in kernels/cpu/README.md),
// CUDA discovery and synchronisation through kernels/cuda, per-thread stream.
#include "kernels/runtime.h"

#include "gantry_config.h"

#include "base/tunables.h"

#include <linux/futex.h>
#include <omp.h>
#include <pthread.h>
#include <sched.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <algorithm>
#include <cstdlib>
#include <mutex>
#include <thread>
#include <vector>

#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/parallel.h"

#if GANTRY_KERNELS_WITH_CUDA  // set by kernels/CMakeLists.txt when kernels/cuda is built
#include "kernels/cuda/cuda_ops.h"
#endif

namespace gantry::kernels {

namespace {

int DefaultThreads() {
  const int64_t n = TunableInt("NUM_THREADS", 0);  // 0 (the default) or negative: every core
  return n > 0 ? int(std::min<int64_t>(n, 4096)) : UsableCpus();
}

std::atomic<int>& ThreadsSetting() {
  static std::atomic<int> threads{DefaultThreads()};
  return threads;
}

thread_local void* current_stream = nullptr;
thread_local bool in_parallel = false;

// How long an idle helper spins for the next job before sleeping on the futex, in
// microseconds (GANTRY_POOL_SPIN_US). Ops of a training step follow each other within a few
// microseconds, so a short spin saves the ~10-50 us futex wake-up on most jobs; past it the
// helper leaves the core to whoever needs it.
int64_t SpinMicros() {
  static const int64_t value = std::max<int64_t>(0, TunableInt("POOL_SPIN_US", 200));
  return value;
}

constexpr int kYieldSpins = 5;  // yielding spin after the pure one, in units of SpinMicros

inline void CpuRelax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

void FutexWait(std::atomic<uint32_t>* word, uint32_t expected) {
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), FUTEX_WAIT_PRIVATE, expected, nullptr,
          nullptr, 0);
}

void FutexWakeAll(std::atomic<uint32_t>* word) {
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), FUTEX_WAKE_PRIVATE, INT32_MAX, nullptr,
          nullptr, 0);
}

// One job at a time. gen_ is odd while a job is open and even otherwise; a helper joins a job
// only after registering in entered_ and re-checking gen_ (seq_cst on both sides), and the
// caller closes the job and waits for entered_ == 0 before the job's fields may change.
class ThreadPool {
 public:
  void Run(int64_t chunks, int threads, cpu::ChunkFn fn, void* ctx) {
    std::unique_lock<std::mutex> lock(run_mu_, std::try_to_lock);
    if (!lock.owns_lock()) return RunSerial(chunks, fn, ctx);  // another caller has the pool
    const int helpers = std::min<int>(threads - 1, int(std::min<int64_t>(chunks - 1, 64)));
    EnsureHelpers(helpers);
    chunks_ = chunks, fn_ = fn, ctx_ = ctx, job_helpers_ = helpers;
    next_.store(0, std::memory_order_relaxed);
    done_.store(0, std::memory_order_relaxed);
    const uint32_t gen = gen_.load(std::memory_order_relaxed) + 1;  // odd: open
    gen_.store(gen);
    if (sleepers_.load() > 0) FutexWakeAll(&gen_);
    in_parallel = true;
    Work();
    in_parallel = false;
    // Chunks claimed by helpers: wait, yielding the core after a short spin so a preempted
    // helper on this core gets to finish.
    for (int spins = 0; done_.load(std::memory_order_acquire) < chunks_; ++spins) {
      if (spins < 2000) {
        CpuRelax();
      } else {
        sched_yield();
      }
    }
    gen_.store(gen + 1);                         // even: closed
    while (entered_.load() != 0) sched_yield();  // late joiners see the close and leave
  }

  static void RunSerial(int64_t chunks, cpu::ChunkFn fn, void* ctx) {
    const bool was = in_parallel;
    in_parallel = true;
    for (int64_t c = 0; c < chunks; ++c) fn(ctx, c);
    in_parallel = was;
  }

 private:
  void Work() {
    int64_t mine = 0;
    for (int64_t c; (c = next_.fetch_add(1, std::memory_order_relaxed)) < chunks_; ++mine) {
      fn_(ctx_, c);
    }
    if (mine > 0) done_.fetch_add(mine, std::memory_order_release);
  }

  void EnsureHelpers(int n) {
    while (started_ < n) {
      const int id = started_++;
      std::thread([this, id] { HelperLoop(id); }).detach();  // lives as long as the process
    }
  }

  void HelperLoop(int id) {
    in_parallel = true;
    omp_set_num_threads(1);  // oneDNN called from a chunk must not start its own team
    uint32_t seen = gen_.load();
    for (;;) {
      const uint32_t gen = WaitForChange(seen);
      seen = gen;
      if ((gen & 1) == 0) continue;
      entered_.fetch_add(1);
      if (gen_.load() == gen && id < job_helpers_) Work();
      entered_.fetch_sub(1);
    }
  }

  uint32_t WaitForChange(uint32_t seen) {
    const auto start = std::chrono::steady_clock::now();
    const auto spin_until = start + std::chrono::microseconds(SpinMicros());
    for (int i = 0;; ++i) {
      const uint32_t gen = gen_.load(std::memory_order_acquire);
      if (gen != seen) return gen;
      CpuRelax();
      if ((i & 63) == 63 && std::chrono::steady_clock::now() > spin_until) break;
    }
    // Then kYieldSpins x as long again, yielding the core between looks: a runnable thread
    // (another rank on an oversubscribed host) gets it at once, and an idle core keeps the
    // helper one look away from the next job. Gaps between a step's parallel ops often exceed
    // the pure spin (small GEMMs stay on one thread, bf16 ones with AMX even more so).
    // train_bench --threads 2, 3 interleaved pairs against futex after the pure spin:
    // mlp-mnist f32 +5-13%, bf16 +9-12%; gpt-tiny f32 and bf16 within +-2%.
    const auto yield_until = start + kYieldSpins * std::chrono::microseconds(SpinMicros());
    while (std::chrono::steady_clock::now() < yield_until) {
      const uint32_t gen = gen_.load(std::memory_order_acquire);
      if (gen != seen) return gen;
      sched_yield();
    }
    sleepers_.fetch_add(1);
    uint32_t gen;
    while ((gen = gen_.load()) == seen) FutexWait(&gen_, seen);
    sleepers_.fetch_sub(1);
    return gen;
  }

  std::mutex run_mu_;  // held by the caller for a whole job
  int started_ = 0;    // helpers started (guarded by run_mu_)
  std::atomic<uint32_t> gen_{0};
  std::atomic<int> entered_{0};
  std::atomic<int> sleepers_{0};
  alignas(64) std::atomic<int64_t> next_{0};
  alignas(64) std::atomic<int64_t> done_{0};
  // The open job; written only while gen_ is even and entered_ == 0.
  int64_t chunks_ = 0;
  cpu::ChunkFn fn_ = nullptr;
  void* ctx_ = nullptr;
  int job_helpers_ = 0;
};

// Never destroyed: helpers are detached and may sleep in the pool until the process exits. A
// forked child starts a fresh pool (the parent's helper threads do not exist there).
std::atomic<ThreadPool*> pool{nullptr};
std::once_flag pool_once;

ThreadPool& Pool() {
  std::call_once(pool_once, [] {
    pool.store(new ThreadPool());
    pthread_atfork(nullptr, nullptr, [] { pool.store(new ThreadPool()); });
  });
  return *pool.load();
}

}  // namespace

namespace cpu {

void RunChunks(int64_t chunks, int threads, ChunkFn fn, void* ctx) {
  if (threads <= 1 || chunks <= 1 || in_parallel) return ThreadPool::RunSerial(chunks, fn, ctx);
  Pool().Run(chunks, threads, fn, ctx);
}

bool InParallelRegion() { return in_parallel || omp_in_parallel(); }

}  // namespace cpu

void SetNumThreads(int threads) {
  if (threads <= 0) threads = DefaultThreads();
  ThreadsSetting().store(threads);
}

int NumThreads() { return ThreadsSetting().load(std::memory_order_relaxed); }

int UsableCpus() {
  const int cores = omp_get_num_procs();  // respects the affinity mask
  return cores > 0 ? cores : std::max(1, int(std::thread::hardware_concurrency()));
}

namespace {
std::atomic<int>& PrecisionSetting() {
  static std::atomic<int> value{static_cast<int>(MatmulPrecision::kF32)};
  return value;
}
}  // namespace

namespace {
std::atomic<double>& MinFlopsSetting() {
  static std::atomic<double> value{4e6};
  return value;
}
// The bf16 product threshold a Set*MatmulPrecision call asked for; -1: GANTRY_BF16_MIN_FLOPS
// or 4e6 (the same rule on CPU and CUDA, so both round the same products).
double ResolveBf16MinFlops(double requested) {
  if (requested >= 0) return requested;
  return std::max(0.0, TunableDouble("BF16_MIN_FLOPS", 4e6));
}
}  // namespace

double Bf16MinFlops() { return MinFlopsSetting().load(std::memory_order_relaxed); }

Status SetCpuMatmulPrecision(MatmulPrecision precision, double bf16_min_flops) {
  MinFlopsSetting().store(ResolveBf16MinFlops(bf16_min_flops));
#if !GANTRY_WITH_DNNL
  if (precision == MatmulPrecision::kBf16) {
    return UnimplementedError("bf16 matmuls on CPU need oneDNN (libdnnl-dev); rebuild with it");
  }
#endif
  PrecisionSetting().store(static_cast<int>(precision));
  return OkStatus();
}

namespace {
// The registered parameter range, its epoch and its bf16 copy. `state` packs the epoch (high
// bits) with whether the copy holds this epoch's parameters (bit 0), so a reader sees both
// from one load.
struct WeightsRange {
  std::atomic<const char*> begin{nullptr};
  std::atomic<size_t> bytes{0};
  std::atomic<uint64_t> state{2};  // epoch 1, copy not current
  // Elements the optimizer rounded into the copy since the epoch began.
  std::atomic<int64_t> copy_written{0};
  std::atomic<uint16_t*> copy{nullptr};
  std::vector<uint16_t> copy_storage;  // one bf16 per f32 parameter; replaced only by Set
};
WeightsRange& Weights() {
  static WeightsRange w;
  return w;
}

void AdvanceEpoch(bool copy_current) {
  WeightsRange& w = Weights();
  uint64_t old = w.state.load();
  while (!w.state.compare_exchange_weak(old, (((old >> 1) + 1) << 1) | (copy_current ? 1 : 0))) {
  }
}

// Where [p, p + bytes) lies inside the range, its offset in floats; -1 otherwise.
int64_t FloatOffsetInRange(const void* p, size_t bytes) {
  const char* b = Weights().begin.load();
  const char* c = static_cast<const char*>(p);
  if (b == nullptr || c < b || c + bytes > b + Weights().bytes.load()) return -1;
  return int64_t(c - b) / int64_t(sizeof(float));
}
}  // namespace

void SetMatmulWeights(const void* begin, size_t bytes) {
  WeightsRange& w = Weights();
  w.begin.store(nullptr);  // no lookups into a range that is being replaced
  w.copy.store(nullptr);
  w.copy_storage.assign(begin != nullptr ? bytes / sizeof(float) : 0, 0);
  w.copy.store(w.copy_storage.empty() ? nullptr : w.copy_storage.data());
  w.bytes.store(begin != nullptr ? bytes : 0);
  w.begin.store(static_cast<const char*>(begin));
  NewMatmulWeightsEpochAfterLoad();
}

void ClearMatmulWeightsIf(const void* begin) {
  if (begin != nullptr && Weights().begin.load() == static_cast<const char*>(begin)) {
    SetMatmulWeights(nullptr, 0);
  }
}

void NewMatmulWeightsEpoch() {
  WeightsRange& w = Weights();
  const int64_t total = int64_t(w.bytes.load() / sizeof(float));
  AdvanceEpoch(total > 0 && w.copy_written.exchange(0) == total);
}

void NewMatmulWeightsEpochAfterLoad() {
  Weights().copy_written.store(0);
  AdvanceEpoch(false);
}

uint16_t* MatmulWeightsBf16Copy(const float* p, int64_t n) {
  if (CpuMatmulPrecision() != MatmulPrecision::kBf16) return nullptr;  // f32 products read p
  const int64_t offset = FloatOffsetInRange(p, size_t(n) * sizeof(float));
  uint16_t* copy = Weights().copy.load();
  if (offset < 0 || copy == nullptr) return nullptr;
  return copy + offset;
}

void MatmulWeightsBf16CopyWritten(int64_t n) { Weights().copy_written.fetch_add(n); }

namespace cpu {
MatmulWeightsInfo MatmulWeightsOf(const void* p, size_t bytes) {
  const int64_t offset = FloatOffsetInRange(p, bytes);
  if (offset < 0) return {};
  const uint64_t state = Weights().state.load();
  uint16_t* copy = Weights().copy.load();
  return {state >> 1, (state & 1) != 0, copy != nullptr ? copy + offset : nullptr};
}
}  // namespace cpu

namespace {
std::atomic<int>& CudaPrecisionSetting() {
  static std::atomic<int> value{static_cast<int>(MatmulPrecision::kF32)};
  return value;
}
std::atomic<double>& CudaMinFlopsSetting() {
  static std::atomic<double> value{4e6};
  return value;
}
}  // namespace

Status SetCudaMatmulPrecision(MatmulPrecision precision, double bf16_min_flops) {
  if (precision == MatmulPrecision::kBf16 && !BuiltWithCuda()) {
    return UnimplementedError("bf16 matmuls on CUDA: this build has no CUDA support");
  }
  CudaMinFlopsSetting().store(ResolveBf16MinFlops(bf16_min_flops));
  CudaPrecisionSetting().store(static_cast<int>(precision));
  return OkStatus();
}
Status SetMatmulPrecisionFor(Device device, MatmulPrecision precision) {
  const MatmulPrecision f32 = MatmulPrecision::kF32;
  GANTRY_RETURN_IF_ERROR(SetCpuMatmulPrecision(device.is_cuda() ? f32 : precision));
  return SetCudaMatmulPrecision(device.is_cuda() ? precision : f32);
}

MatmulPrecision CudaMatmulPrecision() {
  return static_cast<MatmulPrecision>(CudaPrecisionSetting().load(std::memory_order_relaxed));
}
double CudaBf16MinFlops() { return CudaMinFlopsSetting().load(std::memory_order_relaxed); }

MatmulPrecision CpuMatmulPrecision() {
  return static_cast<MatmulPrecision>(PrecisionSetting().load(std::memory_order_relaxed));
}

std::string CpuBf16Support() {
#if defined(__x86_64__)
  if (__builtin_cpu_supports("amx-bf16")) return "amx_bf16";
  if (__builtin_cpu_supports("avx512bf16")) return "avx512_bf16";
#endif
  return "emulated";
}

int CudaDeviceCount() {
#if GANTRY_KERNELS_WITH_CUDA
  return cuda::DeviceCount();
#else
  return 0;
#endif
}

StatusOr<CudaDeviceProperties> GetCudaDeviceProperties(int index) {
#if GANTRY_KERNELS_WITH_CUDA
  return cuda::DeviceProperties(index);
#else
  (void)index;
  return UnimplementedError("GetCudaDeviceProperties: this build has no CUDA support");
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
