// ShardedOptimizer: pieces by decay group, the sharded update (overlapped with the reduce when
// no clipping is needed), the global norm, the parameter allgathers and the point-to-point
// moves of state pieces to and from rank 0 for checkpoints.
#include "train/sharded_optimizer.h"

#include <cmath>
#include <cstring>

#include "kernels/linear.h"
#include "kernels/optim.h"

namespace gantry::train {

using kernels::Tensor;

namespace {
std::vector<std::string> StateNames(const std::string& type) {
  if (type == "momentum") return {"momentum_buffer"};
  if (type == "adam" || type == "adamw") return {"exp_avg", "exp_avg_sq"};
  return {};
}
}  // namespace

StatusOr<std::unique_ptr<ShardedOptimizer>> ShardedOptimizer::Create(const OptimizerSpec& spec,
                                                                     Model& model,
                                                                     comm::Communicator& comm,
                                                                     BucketReducer& reducer) {
  const std::string& t = spec.type;
  if (t != "sgd" && t != "momentum" && t != "adam" && t != "adamw") {
    return InvalidArgumentError("unknown optimizer.type '" + t +
                                "': expected sgd, momentum, adam or adamw");
  }
  std::unique_ptr<ShardedOptimizer> o(new ShardedOptimizer(spec, model, comm, reducer));
  o->PlanPieces();
  GANTRY_RETURN_IF_ERROR(o->Allocate());
  return o;
}

void ShardedOptimizer::PlanPieces() {
  const int r = comm_.rank();
  const std::vector<ParamInfo>& params = model_.params();
  for (const Bucket& b : reducer_.buckets()) {
    const size_t first = pieces_.size();
    first_piece_.push_back(first);
    const int64_t lo = b.OwnedBegin(r), hi = b.OwnedEnd(r);
    for (const ParamInfo& p : params) {
      const int64_t a = std::max(lo, p.offset), e = std::min(hi, p.offset + p.numel);
      if (a >= e) continue;
      const int64_t local = b.shard + (a - lo);
      if (pieces_.size() > first && pieces_.back().decay == p.decay &&
          pieces_.back().flat + pieces_.back().numel == a) {
        pieces_.back().numel += e - a;
      } else {
        pieces_.push_back({a, local, e - a, p.decay});
      }
    }
  }
  first_piece_.push_back(pieces_.size());
}

Status ShardedOptimizer::Allocate() {
  for (const std::string& n : StateNames(spec_.type)) {
    GANTRY_ASSIGN_OR_RETURN(Tensor s, Tensor::Empty({std::max<int64_t>(1, reducer_.shard_elems())},
                                                    kernels::DType::kF32, model_.device()));
    state_.emplace_back(n, s);
  }
  const std::vector<Bucket>& buckets = reducer_.buckets();
  int64_t padded = 0;
  slot_.assign(buckets.size(), -1);
  for (size_t i = 0; i < buckets.size(); ++i) {
    if (reducer_.Divisible(i)) continue;  // gathered in place into the parameters
    slot_[i] = padded;
    padded += buckets[i].piece * comm_.size();
  }
  gathers_.resize(buckets.size());
  GANTRY_ASSIGN_OR_RETURN(gather_, Tensor::Empty({std::max<int64_t>(1, padded)},
                                                 kernels::DType::kF32, model_.device()));
  return OkStatus();
}

StatusOr<double> ShardedOptimizer::SumOverRanks(double local) {
  // Every rank sums the same per-rank values in rank order, so all get the same bits.
  std::vector<int32_t> words(2 * size_t(comm_.size()));
  int32_t mine[2];
  std::memcpy(mine, &local, sizeof(local));
  GANTRY_RETURN_IF_ERROR(small_.Allgather(mine, words.data(), 2));
  double total = 0;
  for (int k = 0; k < comm_.size(); ++k) {
    double v;
    std::memcpy(&v, words.data() + 2 * k, sizeof(v));
    total += v;
  }
  return total;
}

StatusOr<float> ShardedOptimizer::ClipGradients() {
  Tensor& g = reducer_.shard_grads();
  double local = 0;
  for (const Piece& p : pieces_) {
    GANTRY_ASSIGN_OR_RETURN(float n, kernels::L2Norm(g.View(p.local, {p.numel})));
    local += double(n) * double(n);
  }
  GANTRY_ASSIGN_OR_RETURN(double total, SumOverRanks(local));
  const float norm = float(std::sqrt(total));
  const float max_norm = float(spec_.grad_clip);
  if (max_norm > 0 && norm > max_norm) {
    const float coef = max_norm / (norm + 1e-6f);
    for (const Piece& p : pieces_) {
      Tensor v = g.View(p.local, {p.numel});
      GANTRY_RETURN_IF_ERROR(kernels::Scale(v, coef));
    }
  }
  return norm;
}

Status ShardedOptimizer::UpdateBucket(size_t i, int64_t step, float lr, double* sum_sq) {
  Tensor& params = model_.flat_params();
  Tensor& grads = reducer_.shard_grads();
  for (size_t k = first_piece_[i]; k < first_piece_[i + 1]; ++k) {
    const Piece& s = pieces_[k];
    Tensor p = params.View(s.flat, {s.numel});
    Tensor g = grads.View(s.local, {s.numel});
    if (sum_sq != nullptr) {
      GANTRY_ASSIGN_OR_RETURN(float n, kernels::L2Norm(g));
      *sum_sq += double(n) * double(n);
    }
    GANTRY_RETURN_IF_ERROR(ApplyUpdate(spec_, step, lr, s.decay, p, g, state_, s.local));
  }
  return OkStatus();
}

Status ShardedOptimizer::IssueGather(size_t i) {
  const Bucket& b = reducer_.buckets()[i];
  const int r = comm_.rank(), world = comm_.size();
  Tensor& params = model_.flat_params();
  const int64_t len = std::max<int64_t>(0, b.OwnedEnd(r) - b.OwnedBegin(r));
  if (slot_[i] < 0) {
    // This rank's gradient piece is spent: it carries the updated parameters out.
    Tensor send = reducer_.shard_grads().View(b.shard, {b.piece});
    GANTRY_RETURN_IF_ERROR(kernels::Copy(params.View(b.OwnedBegin(r), {b.piece}), send));
    gathers_[i] = comm_.Allgather(send.raw(), params.View(b.begin, {b.size()}).raw(),
                                  size_t(b.piece), comm::DataType::kF32);
    return OkStatus();
  }
  Tensor slot = gather_.View(slot_[i] + r * b.piece, {b.piece});
  if (len > 0) {
    Tensor dst = slot.View(0, {len});
    GANTRY_RETURN_IF_ERROR(kernels::Copy(params.View(b.OwnedBegin(r), {len}), dst));
  }
  gathers_[i] = comm_.Allgather(slot.raw(), gather_.View(slot_[i], {b.piece * world}).raw(),
                                size_t(b.piece), comm::DataType::kF32);
  return OkStatus();
}

Status ShardedOptimizer::FinishGathers(Status first) {
  const std::vector<Bucket>& buckets = reducer_.buckets();
  for (size_t i = 0; i < buckets.size(); ++i) {
    if (!gathers_[i]) continue;
    Status s = gathers_[i]->Wait();
    gathers_[i].reset();
    if (!s.ok()) {
      if (first.ok())
        first = s.Prepend("ZeRO-1 parameter allgather of bucket " + std::to_string(i));
      continue;
    }
    if (!first.ok() || slot_[i] < 0) continue;
    const Bucket& b = buckets[i];
    Tensor dst = model_.flat_params().View(b.begin, {b.size()});
    first = kernels::Copy(gather_.View(slot_[i], {b.size()}), dst);
  }
  return first;
}

Status ShardedOptimizer::Step(int64_t step, float lr) {
  Status first;
  for (size_t i = 0; i < reducer_.buckets().size() && first.ok(); ++i) {
    first = UpdateBucket(i, step, lr, nullptr);
    if (first.ok()) first = IssueGather(i);
  }
  return FinishGathers(first);
}

StatusOr<float> ShardedOptimizer::ReduceAndStep(int64_t step, float lr) {
  reducer_.IssueRemaining();
  double sum_sq = 0;
  Status first;
  for (size_t i = 0; i < reducer_.buckets().size(); ++i) {
    Status s = reducer_.Wait(i);  // every bucket is waited, even after an error
    if (!s.ok() && first.ok()) first = s;
    if (!first.ok()) continue;
    first = UpdateBucket(i, step, lr, &sum_sq);
    if (first.ok()) first = IssueGather(i);
  }
  GANTRY_RETURN_IF_ERROR(FinishGathers(first));
  GANTRY_ASSIGN_OR_RETURN(double total, SumOverRanks(sum_sq));
  return float(std::sqrt(total));
}

StatusOr<OptimizerState*> ShardedOptimizer::FullState() {
  if (full_.size() != state_.size()) {
    full_.clear();
    // Between steps the gradient buffer is spent (Backward zeroes it first), so the first
    // state tensor borrows it: a checkpoint costs one full-size buffer less.
    for (const auto& [name, shard] : state_) {
      Tensor t = model_.flat_grads();
      if (!full_.empty()) {
        GANTRY_ASSIGN_OR_RETURN(t, Tensor::Empty(model_.flat_params().shape(),
                                                 kernels::DType::kF32, model_.device()));
      }
      full_.emplace_back(name, t);
    }
  }
  return &full_;
}

int64_t ShardedOptimizer::state_bytes() const {
  int64_t n = 0;
  for (const auto& [name, t] : state_) n += t.numel();
  for (size_t k = 1; k < full_.size(); ++k) n += full_[k].second.numel();  // [0]: the grads
  return n * int64_t(sizeof(float));
}

Status ShardedOptimizer::MovePieces(size_t k, bool to_rank0) {
  const int me = comm_.rank();
  Tensor& shard = state_[k].second;
  std::vector<comm::WorkPtr> work;
  for (const Bucket& b : reducer_.buckets()) {
    for (int r = 0; r < comm_.size(); ++r) {
      const int64_t len = b.OwnedEnd(r) - b.OwnedBegin(r);
      if (len <= 0 || (me != 0 && r != me)) continue;
      Tensor mine = shard.View(b.shard, {len});
      if (me == 0) {
        Tensor whole = full_[k].second.View(b.OwnedBegin(r), {len});
        if (r == 0) {
          GANTRY_RETURN_IF_ERROR(to_rank0 ? kernels::Copy(mine, whole)
                                          : kernels::Copy(whole, mine));
        } else {
          work.push_back(
              to_rank0
                  ? comm_.Recv(whole.raw(), size_t(len), comm::DataType::kF32, r, uint32_t(k))
                  : comm_.Send(whole.raw(), size_t(len), comm::DataType::kF32, r, uint32_t(k)));
        }
        continue;
      }
      work.push_back(to_rank0 ? comm_.Send(mine.raw(), size_t(len), comm::DataType::kF32, 0,
                                           uint32_t(k))
                              : comm_.Recv(mine.raw(), size_t(len), comm::DataType::kF32, 0,
                                           uint32_t(k)));
    }
  }
  Status first;
  for (auto& w : work) {
    Status s = w->Wait();
    if (!s.ok() && first.ok()) {
      first = s.Prepend(std::string("ZeRO-1: moving optimizer state '") + state_[k].first +
                        (to_rank0 ? "' pieces to rank 0 for a checkpoint"
                                  : "' pieces from rank 0 after a restore"));
    }
  }
  return first;
}

StatusOr<OptimizerState*> ShardedOptimizer::GatherState() {
  if (comm_.rank() == 0) GANTRY_RETURN_IF_ERROR(FullState().status());
  for (size_t k = 0; k < state_.size(); ++k) GANTRY_RETURN_IF_ERROR(MovePieces(k, true));
  return comm_.rank() == 0 ? &full_ : nullptr;
}

Status ShardedOptimizer::ScatterStateFromRank0() {
  if (comm_.rank() == 0 && full_.size() != state_.size()) {
    return FailedPreconditionError("ZeRO-1: rank 0 holds no restored optimizer state to scatter");
  }
  for (size_t k = 0; k < state_.size(); ++k) GANTRY_RETURN_IF_ERROR(MovePieces(k, false));
  ReleaseFullState();
  return OkStatus();
}

}  // namespace gantry::train
