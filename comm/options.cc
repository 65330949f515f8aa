// CommOptions: environment overrides, validation and the CommSpec mapping.
#include "comm/options.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <type_traits>

namespace gantry::comm {
namespace {

// A finite number >= 0 and <= `max`; whole for integer settings. Named in every error: a
// value such as 1e10 or 2.5 used to be cast without a word (1e10 sockets became INT_MIN, a
// 1e10 s timeout overflowed to "0 ms").
template <typename T>
Status EnvNumber(const char* name, T* out, double max = double(std::numeric_limits<T>::max())) {
  const char* v = std::getenv(name);
  if (!v || !*v) return OkStatus();
  char* end = nullptr;
  const double x = std::strtod(v, &end);
  if (end == v || *end != '\0' || !std::isfinite(x) || x < 0) {
    return InvalidArgumentError(std::string(name) + "='" + v + "' is not a non-negative number");
  }
  if (std::is_integral_v<T> && x != std::floor(x)) {
    return InvalidArgumentError(std::string(name) + "='" + v + "' is not a whole number");
  }
  // Integer settings: below 2^digits too (double(SIZE_MAX) is 2^64, which would wrap).
  if (x > max || (std::is_integral_v<T> && x >= std::ldexp(1.0, std::numeric_limits<T>::digits))) {
    char limit[32];
    std::snprintf(limit, sizeof(limit), "%.15g", max);
    return InvalidArgumentError(std::string(name) + "='" + v + "' is out of range (at most " +
                                limit + ")");
  }
  *out = static_cast<T>(x);
  return OkStatus();
}

}  // namespace

Status CommOptions::ApplyEnv() {
  if (const char* b = std::getenv("GANTRY_COMM_BACKEND"); b && *b) backend = b;
  double timeout_s = std::chrono::duration<double>(timeout).count();
  // At most 7 days, as the job spec's comm.timeout_s.
  GANTRY_RETURN_IF_ERROR(EnvNumber("GANTRY_COMM_TIMEOUT_S", &timeout_s, 7 * 24 * 3600.0));
  timeout = std::chrono::milliseconds(static_cast<int64_t>(timeout_s * 1000));
  GANTRY_RETURN_IF_ERROR(EnvNumber("GANTRY_COMM_TCP_SOCKETS", &tcp_sockets));
  GANTRY_RETURN_IF_ERROR(EnvNumber("GANTRY_COMM_TCP_CHUNK_BYTES", &tcp_chunk_bytes));
  GANTRY_RETURN_IF_ERROR(EnvNumber("GANTRY_COMM_TCP_SOCKET_BUFFER_BYTES", &tcp_socket_buffer_bytes));
  GANTRY_RETURN_IF_ERROR(EnvNumber("GANTRY_COMM_TCP_EXCHANGE_MAX_BYTES", &tcp_exchange_max_bytes));
  if (const char* h = std::getenv("GANTRY_COMM_TCP_HOST"); h && *h) tcp_host = h;
  GANTRY_RETURN_IF_ERROR(EnvNumber("GANTRY_COMM_SHM_CHUNK_BYTES", &shm_chunk_bytes));
  GANTRY_RETURN_IF_ERROR(EnvNumber("GANTRY_COMM_SHM_STAGES", &shm_stages));
  GANTRY_RETURN_IF_ERROR(EnvNumber("GANTRY_COMM_SHM_MAILBOX_BYTES", &shm_mailbox_bytes));
  GANTRY_RETURN_IF_ERROR(EnvNumber("GANTRY_COMM_SHM_WINDOW_MIN_BYTES", &shm_window_min_bytes));
  GANTRY_RETURN_IF_ERROR(
      EnvNumber("GANTRY_COMM_SHM_STREAMING_MIN_BYTES", &shm_streaming_min_bytes));
  return Validate();
}

Status CommOptions::Validate() const {
  if (backend != "auto" && backend != "tcp" && backend != "shm" && backend != "mpi" &&
      backend != "nccl") {
    return InvalidArgumentError("comm backend '" + backend +
                                "' is unknown: use auto, tcp, shm, mpi or nccl");
  }
  if (timeout.count() <= 0) return InvalidArgumentError("comm timeout must be positive");
  if (tcp_sockets < 1 || tcp_sockets > 16) {
    return InvalidArgumentError("comm tcp_sockets=" + std::to_string(tcp_sockets) +
                                " must be in 1..16");
  }
  if (tcp_chunk_bytes < 4096) return InvalidArgumentError("comm tcp_chunk_bytes must be >= 4096");
  if (shm_chunk_bytes < 1024) return InvalidArgumentError("comm shm_chunk_bytes must be >= 1024");
  if (shm_stages < 2 || shm_stages > 64) return InvalidArgumentError("comm shm_stages must be in 2..64");
  if (shm_mailbox_bytes < 4096) return InvalidArgumentError("comm shm_mailbox_bytes must be >= 4096");
  return OkStatus();
}

CommOptions CommOptions::FromSpec(const CommSpec& spec) {
  CommOptions o;
  o.backend = spec.backend;
  o.timeout = std::chrono::milliseconds(static_cast<int64_t>(spec.timeout_s) * 1000);
  return o;
}

}  // namespace gantry::comm
