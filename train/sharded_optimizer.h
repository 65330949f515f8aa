// ShardedOptimizer: ZeRO-1. Each rank keeps the optimizer state (momentum, Adam moments) of
// only its pieces of the gradient buckets (Bucket::OwnedBegin/End), updates those parameters
// from the reduce-scattered gradients, then allgathers the parameters so every rank holds the
// full model again. The update formulas are Optimizer's (same kernels, same decay groups), so
// results equal the unsharded optimizer's. Checkpoints still hold the full state: GatherState
// assembles it (collective), ScatterState takes this rank's pieces back from it.
// Threading: the training thread only (it issues collectives on the communicator).
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
  Status Step(int64_t step, float lr);

  // Full-size state tensors named like Optimizer::state() ("exp_avg", ...), allocated on first
  // use. GatherState fills rank 0's from every rank (collective; other ranks get nullptr and
  // keep no full copy); ScatterState copies this rank's pieces out of FullState() (local;
  // ranks other than 0 then release it).
  StatusOr<std::vector<std::pair<std::string, kernels::Tensor>>*> GatherState();
  Status ScatterState();
  StatusOr<std::vector<std::pair<std::string, kernels::Tensor>>*> FullState();
  // Elements of state this rank holds per state tensor (its share of the model).
  int64_t shard_elems() const { return reducer_.shard_elems(); }

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
  // Allgathers `src` pieces (flat layout `dst`) bucket by bucket through gather_.
  Status AllgatherFlat(const kernels::Tensor& shard_src, kernels::Tensor& flat_dst, bool from_flat);

  OptimizerSpec spec_;
  Model& model_;
  comm::Communicator& comm_;
  BucketReducer& reducer_;
  HostCollectives small_;  // the norm's partial sums
  std::vector<Piece> pieces_;
  OptimizerState state_;  // shard-sized
  std::vector<std::pair<std::string, kernels::Tensor>> full_;   // full-size, lazily
  kernels::Tensor gather_;                                      // padded f32 staging for allgathers
};

}  // namespace gantry::train
