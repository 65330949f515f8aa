// CommOptions: every tunable of the comm backends in one place, with defaults and a doc line.
// Each field can be overridden by a GANTRY_COMM_<NAME> environment variable (ApplyEnv), e.g.
// GANTRY_COMM_TIMEOUT_S=60 GANTRY_COMM_TCP_SOCKETS=2. CommSpec (base/job_spec.h) maps onto it.
#pragma once

#include <chrono>
#include <cstddef>
#include <string>

#include "base/job_spec.h"
#include "base/status.h"

namespace gantry::comm {

struct CommOptions {
  // auto | tcp | shm | mpi | nccl. auto: nccl when memory is kCuda; else shm inside a host
  // and tcp between hosts (hierarchical when a job spans hosts with several ranks each).
  std::string backend = "auto";
  // Every operation fails (kDeadlineExceeded) when it cannot finish within this time.
  std::chrono::milliseconds timeout = std::chrono::seconds(300);
  // auto/nccl: buffers live on CUDA devices; `cuda_device` is this rank's device (-1: rank
  // modulo the visible device count).
  bool cuda = false;
  int cuda_device = -1;

  // tcp: sockets per direction to each ring neighbour (chunks are striped over them).
  int tcp_sockets = 1;
  // tcp: pipeline chunk (bytes); a chunk is received, reduced and forwarded as one unit.
  // 1 MiB (still L2-resident while reduced) beat 256 KiB / 2 / 4 MiB from 4 MiB messages up
  // (allreduce_bench, 2 ranks on loopback: 16 MiB 2.21 -> 2.40, 256 MiB 1.99 -> 2.03 GB/s
  // busbw) and cut mlp-mnist's tcp comm wait 0.93-0.99 -> 0.80-0.88 ms per step.
  size_t tcp_chunk_bytes = 1 << 20;
  // tcp: allreduces of at most this many bytes between 2 ranks exchange the whole buffer
  // (one round trip) instead of running the ring (two); 0 = always the ring.
  size_t tcp_exchange_max_bytes = 256 << 10;
  // tcp: raise SO_SNDBUF/SO_RCVBUF to at least this (0: keep the kernel's autotuning).
  int tcp_socket_buffer_bytes = 0;
  // tcp: interface address to listen on ("" = the address that reaches the bootstrap store).
  std::string tcp_host;

  // shm: elements per rank per pipeline stage are chosen so a stage holds this many bytes.
  size_t shm_chunk_bytes = 64 << 10;
  // shm: pipeline depth (stages in flight per rank).
  int shm_stages = 4;
  // shm: bytes of each point-to-point mailbox (one per ordered pair of ranks).
  size_t shm_mailbox_bytes = 256 << 10;
  // shm: in-place allreduces of at least this many bytes on symmetric memory take the
  // copy-free window path (smaller ones are faster staged; both give the same bits).
  size_t shm_window_min_bytes = 512 << 10;
  // shm: staged allreduces whose output is at least this big write it with streaming stores
  // (around the caches). 0 = auto: max(4 MiB, the last-level cache), i.e. only outputs that
  // cannot stay cached anyway (shm_kernels::StreamingMinBytes).
  size_t shm_streaming_min_bytes = 0;

  // Applies GANTRY_COMM_* overrides; kInvalidArgument names a malformed variable.
  Status ApplyEnv();
  Status Validate() const;
  static CommOptions FromSpec(const CommSpec& spec);
};

}  // namespace gantry::comm
