// HostCollectives: small collectives on host values (checksums, step times, a norm, a
// manifest) over any communicator. Host backends (tcp, shm, mpi) take the host buffers as
// they are; device backends (nccl) get them staged through a device scratch buffer that
// grows as needed and is reused. Values are moved as 32-bit words, never reduced, so any
// trivially copyable data travels unchanged. Blocking (each call waits, bounded by the
// timeout); the training thread only.
#pragma once

#include <chrono>
#include <cstddef>

#include "base/status.h"
#include "comm/communicator.h"
#include "kernels/tensor.h"

namespace gantry::train {

class HostCollectives {
 public:
  HostCollectives(comm::Communicator& comm, kernels::Device device,
                  std::chrono::milliseconds timeout)
      : comm_(comm), device_(device), timeout_(timeout) {}

  // recv holds size() * words words: rank r's `words` words of send at r * words.
  Status Allgather(const void* send, void* recv, size_t words);
  // `words` words of `data` on `root` copied to every rank's data.
  Status Broadcast(void* data, size_t words, int root);

 private:
  StatusOr<kernels::Tensor> Scratch(size_t words);

  comm::Communicator& comm_;
  kernels::Device device_;
  std::chrono::milliseconds timeout_;
  kernels::Tensor scratch_;  // device backends only
};

}  // namespace gantry::train
