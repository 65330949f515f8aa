// BucketReducer: sums a Model's flat gradient buffer over the ranks of a Communicator in
// buckets, overlapped with Backward. Buckets are contiguous slices taken from the END of the
// buffer backwards (reverse layer order, cut at parameter boundaries), so backward finishes
// them in order; each one's collective is issued the moment the model's grad-ready callback
// says it is final and runs on the communicator's progress thread while backward continues.
// Modes: allreduce in place (f32), or bf16 on the wire (cast into preallocated bf16 staging,
// summed in f32 per hop by the backend, cast back); ZeRO-1 (`shard`): reduce-scatter instead,
// each bucket split into `world` equal pieces, rank r keeping piece r in shard_grads(); a
// bucket whose size world divides is reduce-scattered straight from the gradient buffer, the
// others (and bf16) through zero-padded staging sized for them only. Every buffer is
// allocated once in Create. Threading: the training thread
// calls everything (the communicator's single issuing thread); not thread-safe.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <vector>

#include "base/status.h"
#include "comm/communicator.h"
#include "kernels/tensor.h"
#include "train/model.h"

namespace gantry::train {

struct Bucket {
  int64_t begin = 0, end = 0;  // element range [begin, end) of the flat gradient buffer
  int64_t piece = 0;           // shard mode: elements per rank, ceil((end - begin) / world)
  int64_t staging = 0;         // element offset of its (padded) slot in the staging buffers
  int64_t shard = 0;           // shard mode: element offset of its piece in shard_grads()
  int64_t size() const { return end - begin; }
  // Shard mode: the flat range [lo, hi) rank r owns (hi <= lo when the piece is padding only).
  int64_t OwnedBegin(int r) const { return std::min(end, begin + r * piece); }
  int64_t OwnedEnd(int r) const { return std::min(end, begin + (r + 1) * piece); }
};

// Cuts params (forward order) into buckets from the end: the first (launched first) holds at
// least first_bucket_elems, the others at least bucket_elems (or what is left), each ending
// at a parameter boundary. Then, when max_bucket_elems > 0, any bucket larger than that is
// split into equal chunks (multiples of 16 elements, highest offsets first): chunks of one
// bucket are final together, but their sums arrive one by one, so the optimizer can update
// the first while the next is still on the wire. Pieces and staging offsets are filled for
// `world` ranks.
std::vector<Bucket> PlanBuckets(const std::vector<ParamInfo>& params, int64_t bucket_elems,
                                int64_t first_bucket_elems, int world,
                                int64_t max_bucket_elems = 0);

struct BucketOptions {
  size_t bucket_bytes = 25u << 20;       // comm.bucket_mb
  size_t first_bucket_bytes = 1u << 20;  // small first bucket starts communication early
  size_t max_bucket_bytes = 0;           // split bigger buckets into chunks (0 = never)
  bool bf16 = false;                     // comm.bf16_reduce
  bool shard = false;                    // comm.zero1: reduce-scatter, keep this rank's piece
  std::chrono::milliseconds timeout = std::chrono::seconds(300);
};

class BucketReducer {
 public:
  // kInvalidArgument when the communicator's memory kind does not match the model's device.
  static StatusOr<std::unique_ptr<BucketReducer>> Create(comm::Communicator& comm, Model& model,
                                                         const BucketOptions& options);

  // Before Backward: every bucket becomes pending again.
  void Arm();
  // The model's grad-ready callback: issues every pending bucket lying in [begin, end).
  void OnGradReady(int64_t begin);
  // After Backward: issues every bucket still pending.
  void IssueRemaining() { OnGradReady(0); }
  // Waits for bucket i (bounded by the timeout; its wait time is added to
  // last_wait_seconds()) and finishes it (bf16: cast back). Buckets may be waited one by one
  // in order; afterwards its range of the gradient buffer (shard mode: its piece of
  // shard_grads()) holds the sum over ranks. Errors name the bucket and the comm failure.
  Status Wait(size_t i);
  // IssueRemaining, then Wait for every bucket in order (all are waited even after an error;
  // the first error is returned).
  Status Finish();
  // Waits for every issued bucket's collective to end, ignoring how (bounded by the timeout):
  // before the buffers they read and write go away after a failed step.
  void Quiesce();

  const std::vector<Bucket>& buckets() const { return buckets_; }
  // Buckets issued since Arm() (they are issued in order: 0 .. issued() - 1).
  size_t issued() const { return next_; }
  // True once bucket i's collective finished (never blocks; Wait(i) still finishes it).
  bool Done(size_t i) const { return i < next_ && work_[i] && work_[i]->Done(); }
  // Shard mode: true when bucket i's size is a multiple of world (no padding needed).
  bool Divisible(size_t i) const {
    return buckets_[i].piece * comm_.size() == buckets_[i].size();
  }
  // Shard mode: this rank's reduced pieces, bucket after bucket (Bucket::shard offsets).
  kernels::Tensor& shard_grads() { return shard_grads_; }
  int64_t shard_elems() const { return shard_grads_.numel(); }
  // Seconds Wait/Finish blocked since Arm() (exposed communication time of the step).
  double last_wait_seconds() const { return last_wait_s_; }
  // How many buckets were issued from inside backward (overlapped) in the last step.
  int last_overlapped() const { return overlapped_; }

 private:
  BucketReducer(comm::Communicator& comm, Model& model, const BucketOptions& options)
      : comm_(comm), model_(model), options_(options) {}
  Status Allocate();
  void Launch(size_t i);
  void FailLaunch(size_t i, const Status& s);

  comm::Communicator& comm_;
  Model& model_;
  BucketOptions options_;
  std::vector<Bucket> buckets_;
  std::vector<comm::WorkPtr> work_;
  size_t next_ = 0;  // next bucket to issue
  int overlapped_ = 0;
  double last_wait_s_ = 0;
  kernels::Tensor staging_;      // bf16 [num_params] (allreduce) or padded f32/bf16 (shard)
  std::vector<int64_t> stage_;   // shard: bucket i's slot in staging_ (-1: straight from grads)
  kernels::Tensor shard_wire_;   // shard + bf16: the reduce-scatter output in bf16
  kernels::Tensor shard_grads_;  // shard: f32 pieces
};

}  // namespace gantry::train
