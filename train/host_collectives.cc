// HostCollectives: direct on host backends, staged through device scratch on nccl.
#include "train/host_collectives.h"

namespace gantry::train {

using kernels::DType;
using kernels::Tensor;

StatusOr<Tensor> HostCollectives::Scratch(size_t words) {
  if (size_t(scratch_.numel()) < words) {
    GANTRY_ASSIGN_OR_RETURN(scratch_, Tensor::Empty({int64_t(words)}, DType::kI32, device_));
  }
  return scratch_.View(0, {int64_t(words)});
}

Status HostCollectives::Allgather(const void* send, void* recv, size_t words) {
  const size_t n = size_t(comm_.size());
  if (comm_.memory() == comm::MemoryKind::kHost) {
    return comm_.Allgather(send, recv, words, comm::DataType::kI32)->Wait(timeout_);
  }
  GANTRY_ASSIGN_OR_RETURN(Tensor dev, Scratch(words * n));
  Tensor mine = dev.View(int64_t(words) * comm_.rank(), {int64_t(words)});
  GANTRY_RETURN_IF_ERROR(
      kernels::Copy(Tensor::Wrap(const_cast<void*>(send), {int64_t(words)}, DType::kI32), mine));
  GANTRY_RETURN_IF_ERROR(
      comm_.Allgather(mine.raw(), dev.raw(), words, comm::DataType::kI32)->Wait(timeout_));
  Tensor host = Tensor::Wrap(recv, {int64_t(words * n)}, DType::kI32);
  return kernels::Copy(dev, host);
}

Status HostCollectives::Broadcast(void* data, size_t words, int root) {
  if (words == 0) return OkStatus();
  if (comm_.memory() == comm::MemoryKind::kHost) {
    return comm_.Broadcast(data, words, comm::DataType::kI32, root)->Wait(timeout_);
  }
  GANTRY_ASSIGN_OR_RETURN(Tensor dev, Scratch(words));
  Tensor host = Tensor::Wrap(data, {int64_t(words)}, DType::kI32);
  GANTRY_RETURN_IF_ERROR(kernels::Copy(host, dev));
  GANTRY_RETURN_IF_ERROR(
      comm_.Broadcast(dev.raw(), words, comm::DataType::kI32, root)->Wait(timeout_));
  return kernels::Copy(dev, host);
}

}  // namespace gantry::train
