// ShardedOptimizer: pieces by decay group, the sharded update, the global norm and the
// allgathers of parameters and state.
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
  for (const std::string& n : StateNames(t)) {
    GANTRY_ASSIGN_OR_RETURN(Tensor s, Tensor::Empty({std::max<int64_t>(1, reducer.shard_elems())},
                                                    kernels::DType::kF32, model.device()));
    o->state_.emplace_back(n, s);
  }
  int64_t padded = 0;
  for (const Bucket& b : reducer.buckets()) padded += b.piece * comm.size();
  GANTRY_ASSIGN_OR_RETURN(o->gather_, Tensor::Empty({std::max<int64_t>(1, padded)},
                                                    kernels::DType::kF32, model.device()));
  return o;
}

void ShardedOptimizer::PlanPieces() {
  const int r = comm_.rank();
  const std::vector<ParamInfo>& params = model_.params();
  for (const Bucket& b : reducer_.buckets()) {
    const int64_t lo = b.OwnedBegin(r), hi = b.OwnedEnd(r);
    for (const ParamInfo& p : params) {
      const int64_t a = std::max(lo, p.offset), e = std::min(hi, p.offset + p.numel);
      if (a >= e) continue;
      const int64_t local = b.shard + (a - lo);
      if (!pieces_.empty() && pieces_.back().decay == p.decay &&
          pieces_.back().flat + pieces_.back().numel == a &&
          pieces_.back().local + pieces_.back().numel == local) {
        pieces_.back().numel += e - a;
      } else {
        pieces_.push_back({a, local, e - a, p.decay});
      }
    }
  }
}

StatusOr<float> ShardedOptimizer::ClipGradients() {
  Tensor& g = reducer_.shard_grads();
  double local = 0;
  for (const Piece& p : pieces_) {
    GANTRY_ASSIGN_OR_RETURN(float n, kernels::L2Norm(g.View(p.local, {p.numel})));
    local += double(n) * double(n);
  }
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

Status ShardedOptimizer::Step(int64_t step, float lr) {
  Tensor& params = model_.flat_params();
  Tensor& grads = reducer_.shard_grads();
  for (const Piece& s : pieces_) {
    Tensor p = params.View(s.flat, {s.numel});
    Tensor g = grads.View(s.local, {s.numel});
    GANTRY_RETURN_IF_ERROR(ApplyUpdate(spec_, step, lr, s.decay, p, g, state_, s.local));
  }
  return AllgatherFlat(Tensor(), params, /*from_flat=*/true);
}

Status ShardedOptimizer::AllgatherFlat(const Tensor& shard_src, Tensor& flat_dst, bool from_flat) {
  const int r = comm_.rank(), world = comm_.size();
  const std::vector<Bucket>& buckets = reducer_.buckets();
  std::vector<comm::WorkPtr> work(buckets.size());
  for (size_t i = 0; i < buckets.size(); ++i) {
    const Bucket& b = buckets[i];
    const int64_t len = std::max<int64_t>(0, b.OwnedEnd(r) - b.OwnedBegin(r));
    Tensor slot = gather_.View(b.staging + r * b.piece, {b.piece});
    if (len > 0) {
      Tensor dst = slot.View(0, {len});
      const Tensor src =
          from_flat ? flat_dst.View(b.OwnedBegin(r), {len}) : shard_src.View(b.shard, {len});
      GANTRY_RETURN_IF_ERROR(kernels::Copy(src, dst));
    }
    work[i] = comm_.Allgather(slot.raw(), gather_.View(b.staging, {b.piece * world}).raw(),
                              size_t(b.piece), comm::DataType::kF32);
  }
  Status first;
  for (size_t i = 0; i < buckets.size(); ++i) {
    const Bucket& b = buckets[i];
    Status s = work[i]->Wait();
    if (!s.ok()) {
      if (first.ok()) first = s.Prepend("ZeRO-1 allgather of bucket " + std::to_string(i));
      continue;
    }
    if (!first.ok() || !flat_dst.defined() || flat_dst.raw() == nullptr) continue;
    Tensor dst = flat_dst.View(b.begin, {b.size()});
    first = kernels::Copy(gather_.View(b.staging, {b.size()}), dst);
  }
  return first;
}

StatusOr<std::vector<std::pair<std::string, Tensor>>*> ShardedOptimizer::FullState() {
  if (full_.size() != state_.size()) {
    full_.clear();
    for (const auto& [name, shard] : state_) {
      GANTRY_ASSIGN_OR_RETURN(Tensor t, Tensor::Empty(model_.flat_params().shape(),
                                                      kernels::DType::kF32, model_.device()));
      full_.emplace_back(name, t);
    }
  }
  return &full_;
}

StatusOr<std::vector<std::pair<std::string, Tensor>>*> ShardedOptimizer::GatherState() {
  // Only rank 0 (the checkpoint writer) keeps the full copy; the others just take part.
  std::vector<std::pair<std::string, Tensor>>* full = nullptr;
  if (comm_.rank() == 0) {
    GANTRY_ASSIGN_OR_RETURN(full, FullState());
  }
  for (size_t k = 0; k < state_.size(); ++k) {
    Tensor none;
    GANTRY_RETURN_IF_ERROR(AllgatherFlat(state_[k].second, full ? (*full)[k].second : none, false));
  }
  return full;
}

Status ShardedOptimizer::ScatterState() {
  GANTRY_ASSIGN_OR_RETURN(auto* full, FullState());
  const int r = comm_.rank();
  for (size_t k = 0; k < state_.size(); ++k) {
    for (const Bucket& b : reducer_.buckets()) {
      const int64_t len = b.OwnedEnd(r) - b.OwnedBegin(r);
      if (len <= 0) continue;
      Tensor dst = state_[k].second.View(b.shard, {len});
      GANTRY_RETURN_IF_ERROR(kernels::Copy((*full)[k].second.View(b.OwnedBegin(r), {len}), dst));
    }
  }
  if (r != 0) full_.clear();  // only rank 0 needs the full copy between checkpoints
  return OkStatus();
}

}  // namespace gantry::train
