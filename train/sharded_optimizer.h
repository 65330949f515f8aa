// ShardedOptimizer: ZeRO-1. Each rank keeps the optimizer state (momentum, Adam moments) of
// only its pieces of the gradient buckets (Bucket::OwnedBegin/End), updates those parameters
// from the reduce-scattered gradients, then allgathers the parameters so every rank holds the
// full model again. The update formulas are Optimizer's (same kernels, same decay groups), so
// results equal the unsharded optimizer's. In steady state no rank holds more than its 1/N of
// the state: checkpoints (full state, the format the 1-rank trainer reads) are assembled on
// rank 0 only, by point-to-point sends of the pieces, and released after the save; a restore
// sends each rank its pieces from rank 0 the same way. Threading: the training thread only
// (it issues collectives on the communicator).
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "base/job_spec.h"
#include "base/status.h"
#include "comm/communicator.h"
#include "kernels/tensor.h"
#include "train/bucket_reducer.h"
#include "train/host_collectives.h"
#include "train/optimizer.h"
#include "train/model.h"

namespace gantry::train {

class ShardedOptimizer {
 public:
  // `reducer` must be in shard mode and outlive this optimizer (its shard_grads() are read).
  static StatusOr<std::unique_ptr<ShardedOptimizer>> Create(const OptimizerSpec& spec, Model& model,
                                                            comm::Communicator& comm,
                                                            BucketReducer& reducer);

  // Global L2 norm of the averaged gradient over all ranks (collective); clips this rank's
  // pieces in place when spec.grad_clip > 0, as Optimizer::ClipGradients does.
  StatusOr<float> ClipGradients();
  // Update number `step` of this rank's pieces, then allgather of the parameters (collective).
  // Call after the reducer's Finish() (and ClipGradients).
  Status Step(int64_t step, float lr);
  // The overlapped form for grad_clip == 0: waits for the reducer's buckets in order, updates
  // each bucket's pieces as soon as they arrived and issues that bucket's parameter allgather
  // while later buckets are still being reduced; returns the global gradient norm.
  StatusOr<float> ReduceAndStep(int64_t step, float lr);

  // Full-size state tensors named like Optimizer::state() ("exp_avg", ...), made on first use
  // (rank 0, for checkpoints and restores) and freed by ReleaseFullState. The first one is
  // the model's gradient buffer, spent between steps: use it only between steps.
  StatusOr<OptimizerState*> FullState();
  void ReleaseFullState() { full_.clear(); }
  // Collective: rank 0's FullState() receives every rank's pieces; other ranks get nullptr.
  StatusOr<OptimizerState*> GatherState();
  // Collective: every rank's pieces from rank 0's FullState() (filled by a restore); rank 0
  // then releases it.
  Status ScatterStateFromRank0();
  // Elements of state this rank holds per state tensor (its share of the model).
  int64_t shard_elems() const { return reducer_.shard_elems(); }
  // Bytes of optimizer state this rank allocated (shard plus full copies beyond the grads).
  int64_t state_bytes() const;

 private:
  struct Piece {    // a run of this rank's elements with one decay flag
    int64_t flat;   // offset in the flat parameter buffer
    int64_t local;  // offset in shard_grads() and the shard state
    int64_t numel;
    bool decay;
  };
  ShardedOptimizer(const OptimizerSpec& spec, Model& model, comm::Communicator& comm,
                   BucketReducer& reducer)
      : spec_(spec),
        model_(model),
        comm_(comm),
        reducer_(reducer),
        small_(comm, model.device(), std::chrono::hours(1)) {}
  void PlanPieces();
  Status Allocate();
  // Bucket i: update this rank's pieces; adds their squared gradient norm to *sum_sq.
  Status UpdateBucket(size_t i, int64_t step, float lr, double* sum_sq);
  // Bucket i's parameter allgather: issue, then (after its Wait) copy out of padding.
  Status IssueGather(size_t i);
  Status FinishGathers(Status first);
  // Sum over ranks of `local` (same bits on every rank: summed in rank order).
  StatusOr<double> SumOverRanks(double local);
  // Point-to-point between rank 0's full tensor and every rank's shard (k: state index).
  Status MovePieces(size_t k, bool to_rank0);

  OptimizerSpec spec_;
  Model& model_;
  comm::Communicator& comm_;
  BucketReducer& reducer_;
  HostCollectives small_;  // the norm's partial sums
  std::vector<Piece> pieces_;
  std::vector<size_t> first_piece_;  // bucket i's pieces: [first_piece_[i], first_piece_[i+1])
  OptimizerState state_;             // shard-sized
  OptimizerState full_;              // full-size, rank 0 around checkpoints only
  kernels::Tensor gather_;           // padded f32 slots of buckets world does not divide
  std::vector<int64_t> slot_;        // bucket i's slot in gather_ (-1: gathers in place)
  std::vector<comm::WorkPtr> gathers_;
};

}  // namespace gantry::train
