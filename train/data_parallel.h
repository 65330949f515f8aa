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
#include <memory>
#include <string>
#include <vector>

#include "base/job_spec.h"
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
  bool bf16_reduce = false;              // comm.bf16_reduce
  bool zero1 = false;                    // comm.zero1
  int64_t check_every = 100;             // GANTRY_DP_CHECK_EVERY: parameter checksum (0 = off)
  int64_t straggler_every = 50;          // GANTRY_DP_STRAGGLER_EVERY (0 = off)
  double straggler_ratio = 1.5;          // GANTRY_DP_STRAGGLER_RATIO
  std::chrono::milliseconds timeout = std::chrono::seconds(300);  // comm.timeout_s
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
  const std::vector<Bucket>& buckets() const { return reducer_->buckets(); }
  // Backward's loss_scale: 1/world, so the summed gradients are the global mean.
  float loss_scale() const { return 1.0f / float(world()); }
  // ZeRO-1: the sharded optimizer (else nullptr; the Trainer's Optimizer is used).
  ShardedOptimizer* sharded() { return sharded_.get(); }

  // Collective: parameters (and `state` tensors, full-size, e.g. restored optimizer state)
  // become rank 0's on every rank; with ZeRO-1 each rank then keeps its shard of the state.
  Status BroadcastFromRank0(const std::vector<kernels::Tensor>& state);
  // Collective: rank 0's `blob` (small) on every rank.
  Status BroadcastBlob(std::string* blob);

  // The step, in the order the Trainer calls it.
  void BeginBackward() { reducer_->Arm(); }
  Status ReduceGradients() { return reducer_->Finish(); }
  StatusOr<float> ClipGradients(Optimizer* optimizer);
  Status Update(Optimizer* optimizer, int64_t step, float lr);
  // Seconds the last ReduceGradients blocked (communication not hidden behind backward).
  double last_comm_wait() const { return reducer_->last_wait_seconds(); }

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

  comm::Communicator& comm_;
  Model& model_;
  DataParallelOptions options_;
  std::unique_ptr<HostCollectives> small_;  // checksums, step times, blobs
  std::unique_ptr<BucketReducer> reducer_;
  std::unique_ptr<ShardedOptimizer> sharded_;
  StepTimes window_;
  int64_t window_steps_ = 0;
  std::vector<int> stragglers_;
  kernels::Tensor host_params_;  // CUDA models: host copy for the checksum (allocated lazily)
};

}  // namespace gantry::train
