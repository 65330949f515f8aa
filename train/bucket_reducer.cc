// BucketReducer: bucket plan, staging buffers, issuing collectives from the grad-ready
// callback, and completing them in order.
#include "train/bucket_reducer.h"

#include <algorithm>

#include "comm/lane.h"

namespace gantry::train {

using kernels::DType;
using kernels::Tensor;
using Clock = std::chrono::steady_clock;

namespace {
// Splits [begin, end) into ceil(size / max) chunks of equal size (multiples of 16 elements,
// so vector loops stay aligned), highest offsets first.
void AppendChunks(int64_t begin, int64_t end, int64_t max_elems, std::vector<Bucket>* out) {
  const int64_t size = end - begin;
  const int64_t n = max_elems > 0 ? (size + max_elems - 1) / max_elems : 1;
  const int64_t chunk = n > 1 ? ((size + n - 1) / n + 15) / 16 * 16 : size;
  for (int64_t hi = end; hi > begin;) {
    const int64_t lo = std::max(begin, hi - chunk);
    out->push_back(Bucket{lo, hi});
    hi = lo;
  }
}
}  // namespace

std::vector<Bucket> PlanBuckets(const std::vector<ParamInfo>& params, int64_t bucket_elems,
                                int64_t first_bucket_elems, int world, int64_t max_bucket_elems) {
  std::vector<Bucket> out;
  if (params.empty()) return out;
  bucket_elems = std::max<int64_t>(1, bucket_elems);
  first_bucket_elems = std::max<int64_t>(1, first_bucket_elems);
  int64_t end = params.back().offset + params.back().numel;
  for (size_t k = params.size(); k-- > 0;) {
    const int64_t cap = out.empty() ? first_bucket_elems : bucket_elems;
    const int64_t begin = params[k].offset;
    if (end - begin >= cap || k == 0) {
      AppendChunks(begin, end, max_bucket_elems, &out);
      end = begin;
    }
  }
  int64_t staging = 0, shard = 0;
  for (Bucket& b : out) {
    b.piece = (b.size() + world - 1) / world;
    b.staging = staging;
    b.shard = shard;
    staging += b.piece * world;
    shard += b.piece;
  }
  return out;
}

StatusOr<std::unique_ptr<BucketReducer>> BucketReducer::Create(comm::Communicator& comm,
                                                               Model& model,
                                                               const BucketOptions& options) {
  const bool on_cuda = model.device().is_cuda();
  if (on_cuda != (comm.memory() == comm::MemoryKind::kCuda)) {
    return InvalidArgumentError("data parallel: comm backend '" + std::string(comm.backend()) +
                                "' takes " + (on_cuda ? "host" : "CUDA") +
                                " buffers but the model lives on " + model.device().ToString() +
                                "; use comm.backend auto (nccl on GPUs, shm/tcp/mpi on CPUs)");
  }
  std::unique_ptr<BucketReducer> r(new BucketReducer(comm, model, options));
  const int64_t es = int64_t(sizeof(float));
  r->buckets_ = PlanBuckets(model.params(), int64_t(options.bucket_bytes) / es,
                            int64_t(options.first_bucket_bytes) / es, comm.size(),
                            int64_t(options.max_bucket_bytes) / es);
  r->work_.resize(r->buckets_.size());
  GANTRY_RETURN_IF_ERROR(r->Allocate());
  return r;
}

Status BucketReducer::Allocate() {
  const kernels::Device dev = model_.device();
  const int world = comm_.size();
  if (!options_.shard) {
    if (options_.bf16) {
      GANTRY_ASSIGN_OR_RETURN(staging_, Tensor::Empty({model_.num_params()}, DType::kBF16, dev));
    }
    return OkStatus();
  }
  int64_t padded = 0, pieces = 0;
  stage_.assign(buckets_.size(), -1);
  for (size_t i = 0; i < buckets_.size(); ++i) {
    const Bucket& b = buckets_[i];
    pieces += b.piece;
    if (options_.bf16 || !Divisible(i)) {
      stage_[i] = padded;
      padded += b.piece * world;
    }
  }
  const DType wire = options_.bf16 ? DType::kBF16 : DType::kF32;
  // Zero-filled once; padding slots are never written, so they stay zero.
  GANTRY_ASSIGN_OR_RETURN(staging_, Tensor::Empty({std::max<int64_t>(1, padded)}, wire, dev));
  GANTRY_ASSIGN_OR_RETURN(shard_grads_, Tensor::Empty({pieces}, DType::kF32, dev));
  if (options_.bf16) {
    GANTRY_ASSIGN_OR_RETURN(shard_wire_, Tensor::Empty({pieces}, DType::kBF16, dev));
  }
  return OkStatus();
}

void BucketReducer::Arm() {
  next_ = 0;
  overlapped_ = 0;
  last_wait_s_ = 0;
  for (auto& w : work_) w.reset();
}

void BucketReducer::OnGradReady(int64_t begin) {
  while (next_ < buckets_.size() && buckets_[next_].begin >= begin) {
    if (begin > 0) ++overlapped_;
    Launch(next_++);
  }
}

// Staging the bucket failed (a CUDA error): reducing a stale buffer would be silent, and
// not issuing the collective would leave the peers waiting for it. The communicator is
// aborted (the peers fail now) and the bucket carries the error.
void BucketReducer::FailLaunch(size_t i, const Status& s) {
  const Status failed = Status(s).Prepend("staging gradient bucket " + std::to_string(i) +
                                          " on rank " + std::to_string(comm_.rank()));
  comm_.Abort(failed);
  work_[i] = comm::MakeDoneWork(failed);
}

void BucketReducer::Launch(size_t i) {
  const Bucket& b = buckets_[i];
  Tensor grads = model_.flat_grads().View(b.begin, {b.size()});
  const comm::DataType wire = options_.bf16 ? comm::DataType::kBF16 : comm::DataType::kF32;
  if (!options_.shard) {
    if (!options_.bf16) {
      work_[i] =
          comm_.Allreduce(grads.raw(), grads.raw(), size_t(b.size()), wire, comm::ReduceOp::kSum);
      return;
    }
    Tensor stage = staging_.View(b.begin, {b.size()});
    if (Status s = kernels::Cast(grads, stage); !s.ok()) return FailLaunch(i, s);
    work_[i] =
        comm_.Allreduce(stage.raw(), stage.raw(), size_t(b.size()), wire, comm::ReduceOp::kSum);
    return;
  }
  Tensor out =
      options_.bf16 ? shard_wire_.View(b.shard, {b.piece}) : shard_grads_.View(b.shard, {b.piece});
  if (stage_[i] < 0) {  // f32 and divisible: no copy
    work_[i] = comm_.ReduceScatter(grads.raw(), out.raw(), size_t(b.piece), wire,
                                   comm::ReduceOp::kSum);
    return;
  }
  Tensor stage = staging_.View(stage_[i], {b.size()});
  Status s = options_.bf16 ? kernels::Cast(grads, stage) : kernels::Copy(grads, stage);
  if (!s.ok()) return FailLaunch(i, s);
  work_[i] = comm_.ReduceScatter(staging_.View(stage_[i], {b.piece}).raw(), out.raw(),
                                 size_t(b.piece), wire, comm::ReduceOp::kSum);
}

Status BucketReducer::Wait(size_t i) {
  const Bucket& b = buckets_[i];
  const auto t0 = Clock::now();
  Status s = work_[i] ? work_[i]->Wait(options_.timeout)
                      : FailedPreconditionError("bucket was never issued (call IssueRemaining)");
  last_wait_s_ += std::chrono::duration<double>(Clock::now() - t0).count();
  if (!s.ok()) {
    return s.Prepend("gradient bucket " + std::to_string(i) + " of " +
                     std::to_string(buckets_.size()) + " (elements [" + std::to_string(b.begin) +
                     ", " + std::to_string(b.end) + ")) on rank " + std::to_string(comm_.rank()));
  }
  if (!options_.bf16) return OkStatus();
  if (!options_.shard) {
    Tensor grads = model_.flat_grads().View(b.begin, {b.size()});
    return kernels::Cast(staging_.View(b.begin, {b.size()}), grads);
  }
  Tensor out = shard_grads_.View(b.shard, {b.piece});
  return kernels::Cast(shard_wire_.View(b.shard, {b.piece}), out);
}

void BucketReducer::Quiesce() {
  for (size_t i = 0; i < next_ && i < work_.size(); ++i) {
    if (work_[i]) work_[i]->Wait(options_.timeout).IgnoreError();
  }
}

Status BucketReducer::Finish() {
  IssueRemaining();
  Status first;
  for (size_t i = 0; i < buckets_.size(); ++i) {
    Status s = Wait(i);
    if (!s.ok() && first.ok()) first = s;
  }
  return first;
}

}  // namespace gantry::train
