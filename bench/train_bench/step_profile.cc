// train_step_profile: where one training step of a train_bench workload spends its time. Times
// forward / backward / optimizer separately and every GEMM by shape: this binary defines
// dnnl_sgemm itself (taking precedence over libdnnl's at link time), times each call and
// forwards it to libdnnl's (dlopen by soname). Non-GEMM time is the remainder; use perf
// for the per-op split of it. A diagnostic for the kernels owner, not a benchmark.
#include <dlfcn.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <map>
#include <memory>
#include <string>
#include <tuple>

#include "gantry_config.h"
#include "kernels/runtime.h"
#include "train/model.h"
#include "train/optimizer.h"
#include "train/rng.h"

#if GANTRY_WITH_DNNL
#include <dnnl.h>
#endif

namespace {

using Clock = std::chrono::steady_clock;
using GemmKey = std::tuple<char, char, int64_t, int64_t, int64_t>;  // ta, tb, m, n, k
struct GemmStat {
  int64_t calls = 0;
  double seconds = 0;
};
std::map<GemmKey, GemmStat>& GemmStats() {
  static std::map<GemmKey, GemmStat> stats;
  return stats;
}
bool g_recording = false;
// Wall clock by default; with "cpu" the process CPU time (all threads summed), which on a
// shared, loaded machine measures the work done rather than the time the scheduler gave us.
bool g_cpu_time = false;
double Now() {
  if (g_cpu_time) {
    timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
  }
  return std::chrono::duration<double>(Clock::now().time_since_epoch()).count();
}

}  // namespace

#if GANTRY_WITH_DNNL
extern "C" dnnl_status_t dnnl_sgemm(char ta, char tb, dnnl_dim_t m, dnnl_dim_t n, dnnl_dim_t k,
                                    float alpha, const float* a, dnnl_dim_t lda, const float* b,
                                    dnnl_dim_t ldb, float beta, float* c, dnnl_dim_t ldc) {
  using Fn = dnnl_status_t (*)(char, char, dnnl_dim_t, dnnl_dim_t, dnnl_dim_t, float,
                               const float*, dnnl_dim_t, const float*, dnnl_dim_t, float, float*,
                               dnnl_dim_t);
  // The linker drops libdnnl (--as-needed: this definition satisfies every reference), so
  // open it by soname rather than relying on RTLD_NEXT.
  static const Fn real = [] {
    void* lib = dlopen("libdnnl.so.2", RTLD_NOW | RTLD_LOCAL);
    if (lib == nullptr) lib = dlopen("libdnnl.so", RTLD_NOW | RTLD_LOCAL);
    void* fn = lib != nullptr ? dlsym(lib, "dnnl_sgemm") : nullptr;
    if (fn == nullptr) {
      std::fprintf(stderr, "train_step_profile: cannot load libdnnl's dnnl_sgemm: %s\n",
                   dlerror());
      std::abort();
    }
    return reinterpret_cast<Fn>(fn);
  }();
  if (!g_recording) return real(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
  const double t0 = Now();
  const dnnl_status_t st = real(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
  const double s = Now() - t0;
#pragma omp critical(gantry_step_profile)
  {
    GemmStat& g = GemmStats()[{ta, tb, m, n, k}];
    g.calls += 1;
    g.seconds += s;
  }
  return st;
}
#endif

namespace gantry::bench {
namespace {

ModelSpec SpecFor(const std::string& name, int* batch, OptimizerSpec* opt) {
  ModelSpec m;
  if (name == "gpt-tiny") {
    m.type = "gpt";
    m.vocab = 8192, m.context = 128, m.d_model = 256, m.layers = 4, m.heads = 4, m.mlp = 1024;
    opt->type = "adamw", opt->lr = 3e-4, opt->weight_decay = 0.01;
    *batch = 16;
  } else {
    m.type = "mlp";
    m.widths = {784, 512, 512, 10};
    opt->type = "momentum", opt->lr = 0.01, opt->momentum = 0.9;
    *batch = 128;
  }
  return m;
}

int Main(int argc, char** argv) {
  const std::string workload = argc > 1 ? argv[1] : "gpt-tiny";
  const int threads = argc > 2 ? std::atoi(argv[2]) : 1;
  const int steps = argc > 3 ? std::atoi(argv[3]) : 5;
  g_cpu_time = argc > 4 && std::string(argv[4]) == "cpu";
  if ((workload != "gpt-tiny" && workload != "mlp-mnist") || threads <= 0 || steps <= 0) {
    std::fprintf(stderr,
                 "usage: train_step_profile [gpt-tiny|mlp-mnist] [threads] [steps] [wall|cpu]\n");
    return 2;
  }
  kernels::SetNumThreads(threads);
  int batch = 0;
  OptimizerSpec ospec;
  const ModelSpec spec = SpecFor(workload, &batch, &ospec);
  auto model = train::Model::Create(spec, batch, kernels::Device::Cpu());
  if (!model.ok()) return std::fprintf(stderr, "%s\n", model.status().ToString().c_str()), 1;
  train::Model& mdl = **model;
  (void)mdl.InitParams(1);
  auto opt = train::Optimizer::Create(ospec, mdl);
  auto b = train::AllocateBatch(*train::BatchLayoutFor(spec, batch), kernels::Device::Cpu());
  if (!opt.ok() || !b.ok()) return std::fprintf(stderr, "setup failed\n"), 1;
  train::Rng rng(7);
  const uint64_t classes = spec.type == "gpt" ? spec.vocab : 10;
  for (int64_t i = 0; i < b->inputs.numel(); ++i) {
    if (spec.type == "gpt") b->inputs.i32()[i] = int32_t(rng.Below(classes));
    else b->inputs.f32()[i] = rng.Normal();
  }
  for (int64_t i = 0; i < b->targets.numel(); ++i) b->targets.i32()[i] = int32_t(rng.Below(classes));
  double fwd = 0, bwd = 0, upd = 0;
  for (int s = -2; s < steps; ++s) {  // two warm-up steps
    g_recording = s >= 0;
    const double t0 = Now();
    Status st = mdl.Forward(*b);
    const double t1 = Now();
    if (st.ok()) st = mdl.Backward(*b);
    const double t2 = Now();
    if (st.ok()) st = (*opt)->Step(s + 2, float(ospec.lr));
    const double t3 = Now();
    if (!st.ok()) return std::fprintf(stderr, "%s\n", st.ToString().c_str()), 1;
    if (s >= 0) {
      fwd += t1 - t0;
      bwd += t2 - t1;
      upd += t3 - t2;
    }
  }
  const double step_ms = 1e3 * (fwd + bwd + upd) / steps;
  std::printf("%s clock. ", g_cpu_time ? "process CPU" : "wall");
  std::printf("%s, %d thread(s), %d steps: %.1f ms/step = forward %.1f + backward %.1f + "
              "optimizer %.1f ms; %.0f items/s\n",
              workload.c_str(), threads, steps, step_ms, 1e3 * fwd / steps, 1e3 * bwd / steps,
              1e3 * upd / steps, 1e3 * double(mdl.ItemsPerBatch()) / step_ms);
  double gemm_ms = 0;
  std::printf("%-3s %-3s %7s %7s %7s %10s %10s %8s %7s\n", "ta", "tb", "m", "n", "k",
              "calls/step", "ms/step", "GFLOP/s", "%step");
  for (const auto& [key, g] : GemmStats()) {
    const auto [ta, tb, m, n, k] = key;
    const double ms = 1e3 * g.seconds / steps;
    gemm_ms += ms;
    std::printf("%-3c %-3c %7ld %7ld %7ld %10.1f %10.2f %8.1f %6.1f%%\n", ta, tb, long(m), long(n),
                long(k), double(g.calls) / steps, ms, 2.0 * m * n * k * g.calls / g.seconds / 1e9,
                100.0 * ms / (threads * step_ms));
  }
  if (threads == 1) {
    std::printf("GEMM total %.1f ms/step (%.1f%%); everything else %.1f ms/step (%.1f%%)\n",
                gemm_ms, 100.0 * gemm_ms / step_ms, step_ms - gemm_ms,
                100.0 * (step_ms - gemm_ms) / step_ms);
  } else {
    // Each pool thread times its own tiles: the rows add up thread time, and %step is of the
    // step's time on all threads (threads x wall).
    std::printf("(%d threads: ms/step and %%step are per-thread GEMM time, summed over the "
                "threads; %%step is of %d x the wall time)\n", threads, threads);
    std::printf("GEMM total %.1f thread-ms/step (%.1f%% of %.1f thread-ms)\n", gemm_ms,
                100.0 * gemm_ms / (threads * step_ms), threads * step_ms);
  }
  return 0;
}

}  // namespace
}  // namespace gantry::bench

int main(int argc, char** argv) { return gantry::bench::Main(argc, argv); }
