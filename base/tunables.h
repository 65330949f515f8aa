// Process-wide tunables: one table with each knob's default and doc line, each overridable by
// the environment variable GANTRY_<NAME>. Per-call settings belong in option structs instead;
// this is for knobs an operator may need to turn without a rebuild. Add a row to kTunables
// when you add a knob (`gantry info -o json` lists them with their current values).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace gantry {

struct TunableDoc {
  const char* name;           // without the GANTRY_ prefix, e.g. "NUM_THREADS"
  const char* default_value;  // as text, for documentation
  const char* doc;
};

// The documented table (keep in sync with the defaults passed at the call sites).
inline constexpr TunableDoc kTunables[] = {
    {"LOG_LEVEL", "info", "minimum log level: debug | info | warning | error | off"},
    {"NUM_THREADS", "0", "CPU threads for kernels (the kernel thread pool); 0 = all usable cores"},
    {"POOL_SPIN_US", "200", "kernel thread pool: idle helpers spin this long, then 5x as long yielding the core between looks, before sleeping"},
    {"GEMM_MIN_FLOPS_PER_THREAD", "30000000", "CPU GEMMs smaller than this are not split"},
    {"BF16_GEMM_MIN_FLOPS_PER_THREAD", "12000000", "CPU bf16 GEMMs (train.precision bf16) get one thread per this many flops (2mnk)"},
    {"CUDA_TF32", "0", "CUDA f32 matmuls may use TF32 tensor cores (cuBLAS TF32 mode; ~10 mantissa bits): 1 = on"},
    {"HUGEPAGES", "1", "host tensors of 2 MiB and more ask for transparent huge pages (madvise); 0 = off"},
    {"BF16_MIN_FLOPS", "4000000", "train.precision bf16: products smaller than this (2mnk) stay f32 (per-call cost beats the gain)"},
    {"DP_FIRST_BUCKET_KB", "1024", "data parallel: size of the first (last-layer) gradient bucket"},
    {"DP_MAX_BUCKET_KB", "auto", "data parallel, CPU: largest gradient bucket: auto = 4096 when buckets are reduced inline (DP_INLINE_REDUCE), else 1024; 0 = comm.bucket_mb, no split"},
    {"DP_OVERLAP_UPDATE", "1", "data parallel: apply the optimizer bucket by bucket as sums arrive (0 = after all)"},
    {"DATA_PREFETCH", "auto", "training: read the next batch on a background thread during the step: auto = when a core is left over after every local rank's compute threads, or one local process computes on several cores, 1 = always, 0 = never"},
    {"DP_INLINE_REDUCE", "auto", "data parallel: finish each bucket's reduction and update on the training thread inside backward: auto = with the shm backend when no CPU is spare for a progress thread, 1 = always, 0 = never"},
    {"BIND", "auto", "bind each local rank to its own slice of the host's CPUs (as mpirun --bind-to core): auto = when there are several local ranks and the process may use every CPU, core = split whatever CPU set it has, none = never"},
    {"DP_SYMMETRIC_GRADS", "1", "data parallel, shm: gradients in symmetric shared memory, reduced without staging copies (0 = off)"},
    {"DP_FUSED_SUM", "auto", "data parallel, shm with symmetric gradients: no collective, each rank's optimizer sums every rank's gradients (rank order) inside its update: auto = up to 4 ranks, 1 = up to 8, 0 = off"},
    {"FUSED_UPDATE", "1", "one-process training without clipping: optimizer update inside backward (0 = after)"},
    {"DP_CHECK_EVERY", "100", "data parallel: compare parameter checksums every N steps"},
    {"DP_STRAGGLER_EVERY", "50", "data parallel: gather per-rank step times every N steps"},
    {"DP_STRAGGLER_RATIO", "1.5", "data parallel: a rank slower than this x median is named"},
    {"PROGRESS", "auto", "progress display: auto (bar on a TTY, else JSON lines) | bar | json | off"},
    {"PROGRESS_JSON_EVERY_S", "30", "JSON progress: emit at least every this many seconds"},
    {"PROGRESS_JSON_EVERY_PERCENT", "10", "JSON progress: emit at every this many percent"},
    {"METRICS_PORT", "-1", "gantry train: serve Prometheus /metrics on this port + LOCAL_RANK (0 = any free port, logged; -1 = off); --metrics-port wins"},
    {"METRICS_HOST", "127.0.0.1", "gantry train: address of the /metrics endpoint (0.0.0.0 for scrapers on other hosts); --metrics-host wins"},
    {"HTTP_IO_TIMEOUT_MS", "10000", "HTTP server: max time to read a request or write a reply"},
    {"HTTP_IDLE_TIMEOUT_MS", "30000", "HTTP server: keep-alive connection idle limit"},
    {"HTTP_MAX_CONNECTIONS", "256", "HTTP server: concurrent connections before 503"},
    {"HTTP_MAX_BODY_BYTES", "1048576", "HTTP server: largest request body accepted (413 above; /metrics takes none)"},
};

// Value of GANTRY_<name> parsed as the type, else `dflt`. A malformed value is reported once
// (warning log line naming the variable) and the default is used.
int64_t TunableInt(std::string_view name, int64_t dflt);
double TunableDouble(std::string_view name, double dflt);
bool TunableBool(std::string_view name, bool dflt);  // 1/0, true/false, yes/no, on/off
std::string TunableString(std::string_view name, std::string_view dflt);
// auto | 1/0 (any TunableBool spelling): nullopt for auto, unset or malformed (reported).
std::optional<bool> TunableAutoBool(std::string_view name);

// Every documented tunable with the environment's value ("" when unset).
struct TunableValue {
  TunableDoc doc;
  std::string env_value;
};
std::vector<TunableValue> ListTunables();

}  // namespace gantry
