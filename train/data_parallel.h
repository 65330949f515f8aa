// DataParallel: what turns the single-process Trainer into one rank of a data-parallel job.
// Every rank holds the whole model; each step it trains on its own share of the global batch,
// its gradients are summed over ranks in buckets overlapped with backward (BucketReducer; the
// loss is scaled by 1/world so the sum is the average), and every rank applies the same update
// (or, with ZeRO-1, its shard of it followed by an allgather of the parameters). It also:
// - broadcasts parameters (and restored optimizer state) from rank 0 so ranks start identical;
// - every check_every steps allgathers a CRC-32C of the parameters and fails naming the ranks
//   that differ from the majority (kDataLoss);
// - every straggler_every steps allgathers each rank's mean (compute, data-wait, comm-wait)
//   step times and names, in a warning log line and gauges, any rank whose busy time
//   (compute + data wait) exceeds straggler_ratio x the median.
// Threading: the training thread only; the communicator must be used by nobody else.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "base/job_spec.h"
#include "base/settings_agreement.h"
#include "base/status.h"
#include "comm/communicator.h"
#include "train/bucket_reducer.h"
#include "train/host_collectives.h"
#include "train/model.h"
#include "train/optimizer.h"
#include "train/sharded_optimizer.h"

namespace gantry::train {

struct DataParallelOptions {
  size_t bucket_bytes = 25u << 20;       // comm.bucket_mb
  size_t first_bucket_bytes = 1u << 20;  // GANTRY_DP_FIRST_BUCKET_KB (as PyTorch DDP: 1 MiB)
  // GANTRY_DP_MAX_BUCKET_KB: on CPU no bucket is larger (comm.bucket_mb is capped to it, bigger
  // parameter runs are split into chunks), so sums arrive early and in small pieces. Not
  // applied to CUDA models (NCCL): there comm.bucket_mb is the bucket size. Unset (auto):
  // kMaxBucketBytes, or kInlineMaxBucketBytes when the reduction runs inline (see below):
  // there nothing overlaps anyway, and every bucket costs one more rendezvous of the ranks.
  std::optional<size_t> max_bucket_bytes;
  static constexpr size_t kMaxBucketBytes = 1u << 20;
  static constexpr size_t kInlineMaxBucketBytes = 4u << 20;
  bool bf16_reduce = false;              // comm.bf16_reduce
  bool zero1 = false;                    // comm.zero1
  bool overlap_update = true;            // GANTRY_DP_OVERLAP_UPDATE: update bucket by bucket
  bool symmetric_grads = true;           // GANTRY_DP_SYMMETRIC_GRADS: grads in comm memory
  // GANTRY_DP_INLINE_REDUCE (auto | 1 | 0): finish each bucket's collective (and its update)
  // from the grad-ready callback, on the training thread (lanes run an op inline when idle).
  // auto: on when the backend is shm (the whole reduction is CPU work on this host) and no
  // CPU is spare for the progress thread (spare_cpu false), where handing each bucket to it
  // only adds thread switches. Off: the callback only polls.
  std::optional<bool> inline_reduce;   // unset: auto
  // GANTRY_DP_FUSED_SUM (auto | 1 | 0): with the gradients in symmetric memory the backend
  // lets every rank read (shm), no collective runs at all: each rank's optimizer sums all
  // ranks' gradients of a bucket, in rank order, inside its update pass (the same bits on
  // every rank, and as the allreduce path), once the peers signal the bucket final. No
  // reduced copy is written, and no staging: per byte each rank reads `world` gradients
  // instead of the allreduce's 1.5 reads + 1 write followed by the update's read. auto: on
  // for world <= kFusedSumMaxWorld (reads grow with world); needs the replicated optimizer
  // without clipping (else that step uses the allreduce path).
  std::optional<bool> fused_sum;       // unset: auto
  static constexpr int kFusedSumMaxWorld = 4;
  bool spare_cpu = true;                 // set by the trainer (Trainer::SpareCpu)
  int64_t check_every = 100;             // GANTRY_DP_CHECK_EVERY: parameter checksum (0 = off)
  int64_t straggler_every = 50;          // GANTRY_DP_STRAGGLER_EVERY (0 = off)
  double straggler_ratio = 1.5;          // GANTRY_DP_STRAGGLER_RATIO
  // comm.timeout_s, or GANTRY_COMM_TIMEOUT_S as the communicator applies it: the same bound.
  std::chrono::milliseconds timeout = std::chrono::seconds(300);
  // How long the engine waits for a collective: longer than the communicator's own deadline,
  // so a stuck peer fails the op with the backend's error naming the op and the peer (and the
  // op is over) before the wait would give up on an op still running into our buffers.
  std::chrono::milliseconds work_wait() const { return timeout + std::chrono::seconds(30); }
  // The caller's settings every rank must share (e.g. the trainer's step count), checked with
  // the engine's own (bucket plan, ...) at Create: a difference fails Create on every rank,
  // naming it (base/settings_agreement.h).
  SharedSettings must_match;
  // From the job's comm section, then GANTRY_DP_* overrides.
  static DataParallelOptions FromSpec(const CommSpec& spec);
};

// Mean seconds per step of one rank over a straggler window.
struct StepTimes {
  double compute = 0, data_wait = 0, comm_wait = 0;
};

class DataParallel {
 public:
  // Plans buckets and allocates every buffer; installs the model's grad-ready callback.
  static StatusOr<std::unique_ptr<DataParallel>> Create(comm::Communicator& comm, Model& model,
                                                        const OptimizerSpec& optimizer,
                                                        const DataParallelOptions& options);
  ~DataParallel();

  int rank() const { return comm_.rank(); }
  int world() const { return comm_.size(); }
  const DataParallelOptions& options() const { return options_; }
  bool inline_reduce() const { return inline_reduce_; }
  // GANTRY_DP_INLINE_REDUCE=auto's choice for a backend and whether a CPU is spare.
  static bool InlineReduceAuto(std::string_view backend, bool spare_cpu);
  const std::vector<Bucket>& buckets() const { return reducer_->buckets(); }
  // True when the model's gradients live in the communicator's symmetric memory.
  bool symmetric_grads() const { return symmetric_grads_; }
  // True when steps with the replicated optimizer and no clipping use the fused sum (see
  // DataParallelOptions::fused_sum); then flat_grads() keeps this rank's own gradients.
  bool fused_sum() const { return peers_ != nullptr; }
  // Backward's loss_scale: 1/world, so the summed gradients are the global mean.
  float loss_scale() const { return 1.0f / float(world()); }
  // ZeRO-1: the sharded optimizer (else nullptr; the Trainer's Optimizer is used).
  ShardedOptimizer* sharded() { return sharded_.get(); }

  // Collective: parameters (and `state` tensors, full-size, e.g. restored optimizer state)
  // become rank 0's on every rank (ZeRO-1 state moves with sharded()->ScatterStateFromRank0).
  Status BroadcastFromRank0(const std::vector<kernels::Tensor>& state);
  // Collective: rank 0's `blob` (small) on every rank.
  Status BroadcastBlob(std::string* blob);
  // Collective: rank 0 runs `work` (checkpoint I/O, which may take longer than the comm
  // timeout) while the other ranks wait for it with no deadline of their own. On host
  // backends rank 0 broadcasts a "still working" word every timeout/4 (at most 10 s) from a
  // helper thread, so every collective stays inside the comm timeout however long the I/O
  // takes, and a rank 0 that dies is still noticed at once. On device backends (nccl) there
  // are no ticks: the wait is bounded by the comm timeout. Returns `work`'s status on rank 0,
  // OK elsewhere (the caller agrees on the outcome afterwards).
  Status WhileRank0Works(const std::function<Status()>& work);
  // Collective: kFailedPrecondition on every rank when any rank's settings differ from rank
  // 0's, naming the first such setting (base/settings_agreement.h).
  Status AgreeOnSettings(const SharedSettings& settings);

  // The step, in the order the Trainer calls it: BeginBackward, Backward, then either
  // ReduceAndUpdate, or ReduceGradients + ClipGradients + Update (when something must see
  // the whole reduced gradient first).
  void BeginBackward();
  // Same, and updates each bucket whose sum arrives while backward still runs right away,
  // from the grad-ready callback (the replicated optimizer without clipping; otherwise this is
  // BeginBackward()). ReduceAndUpdate with the same arguments finishes the step.
  void BeginBackward(Optimizer* optimizer, int64_t step, float lr);
  // Reduce, clip and update overlapped: waits for the buckets in order and updates each
  // bucket's parameters (replicated optimizer) as soon as its sum arrived, while later
  // buckets are still being reduced; returns the global gradient norm. With grad_clip > 0
  // (the norm must be known before any update) or ZeRO-1 it runs the three steps in turn.
  // Same parameters bit for bit as the three steps (the update is elementwise).
  StatusOr<float> ReduceAndUpdate(Optimizer* optimizer, int64_t step, float lr);
  Status ReduceGradients();
  StatusOr<float> ClipGradients(Optimizer* optimizer);
  Status Update(Optimizer* optimizer, int64_t step, float lr);
  // Seconds the step blocked on communication so far (not hidden behind backward/update).
  double last_comm_wait() const {
    return reducer_->last_wait_seconds() + fused_.wait_s;
  }

  // Collective every check_every steps (and when `force`): kDataLoss naming diverged ranks.
  Status CheckParameters(int64_t step, bool force = false);
  // Adds one step's times; collective every straggler_every steps (logs + metrics).
  Status RecordStep(int64_t step, const StepTimes& t);
  // Ranks named by the last straggler report (for tests and the step log).
  const std::vector<int>& last_stragglers() const { return stragglers_; }

  // Pure helpers (unit-tested): ranks whose value differs from the majority value (ties go
  // to the group holding rank 0); ranks whose busy time exceeds ratio x the median.
  static std::vector<int> DivergedRanks(const std::vector<uint32_t>& checksums);
  static std::vector<int> FindStragglers(const std::vector<StepTimes>& times, double ratio);

 private:
  DataParallel(comm::Communicator& comm, Model& model, const DataParallelOptions& options)
      : comm_(comm), model_(model), options_(options) {}
  StatusOr<uint32_t> ParamChecksum();
  // The model's grad-ready callback: issue buckets, then update those already summed.
  void OnGradReady(int64_t begin);
  // Updates issued buckets in order while their sums are there (block: waits for each).
  void UpdateFinishedBuckets(bool block);
  // Decides (collectively) whether the fused sum runs and sets its signals' starting point.
  Status SetUpFusedSum();
  // Fused sum: publishes this rank's buckets lying in [begin, end) as final.
  void PublishFusedBuckets(int64_t begin);
  // Fused sum: updates published buckets in order while every peer has published them too
  // (block: waits for each, bounded by the timeout).
  void UpdateFusedBuckets(bool block);
  // Fused sum: waits until every peer finished reading this rank's gradients of the last
  // fused step, so backward may overwrite them.
  Status WaitPeersConsumed();
  struct Updating {  // the step being applied bucket by bucket
    Optimizer* optimizer = nullptr;
    int64_t step = 0;
    float lr = 0;
    size_t next = 0;  // next bucket to update
    double sum_sq = 0;
    Status status;  // first reduction or update error
  };
  Updating updating_;
  bool symmetric_grads_ = false;
  // Fused sum state. Signals: kReadySignal = buckets this rank has published (all steps),
  // kConsumedSignal = fused steps whose peer gradients this rank has finished reading.
  static constexpr int kReadySignal = 0, kConsumedSignal = 1;
  comm::SymmetricPeers* peers_ = nullptr;  // set when the fused sum is available
  std::vector<const float*> grad_bases_;   // every rank's flat gradients, rank order
  struct Fused {
    bool active = false;     // this step runs the fused sum
    uint64_t base = 0;       // buckets published before this step
    uint64_t steps = 0;      // fused steps finished
    size_t published = 0;    // buckets of this step published
    double wait_s = 0;       // seconds blocked on peers this step
    Status consumed_wait;    // error of the wait in BeginBackward (returned by the step)
  } fused_;

  comm::Communicator& comm_;
  Model& model_;
  DataParallelOptions options_;
  bool inline_reduce_ = false;  // options_.inline_reduce resolved (Create)
  std::unique_ptr<HostCollectives> small_;  // checksums, step times, blobs
  std::unique_ptr<BucketReducer> reducer_;
  std::unique_ptr<ShardedOptimizer> sharded_;
  OptimizerSpec sharded_spec_;  // the optimizer spec (ZeRO-1 has no Optimizer to ask)
  StepTimes window_;
  int64_t window_steps_ = 0;
  std::vector<int> stragglers_;
  kernels::Tensor host_params_;  // CUDA models: host copy for the checksum (allocated lazily)
};

}  // namespace gantry::train
