// DataParallel: options, start-up broadcast, the reduce/clip/update step, parameter checksums
// and the straggler report.
#include "train/data_parallel.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <condition_variable>
#include <map>
#include <mutex>
#include <thread>
#include <utility>

#include "base/logging.h"
#include "base/metrics.h"
#include "base/tunables.h"
#include "comm/options.h"
#include "kernels/optim.h"
#include "kernels/runtime.h"
#include "storage/checksum.h"
#include "gantry_config.h"
#if GANTRY_WITH_NCCL
#include "comm/nccl/nccl_communicator.h"
#endif

namespace gantry::train {

using kernels::Tensor;

DataParallelOptions DataParallelOptions::FromSpec(const CommSpec& spec) {
  DataParallelOptions o;
  o.bucket_bytes = size_t(std::max(1.0, spec.bucket_mb * double(1 << 20)));
  o.bf16_reduce = spec.bf16_reduce;
  o.zero1 = spec.zero1;
  o.timeout = std::chrono::seconds(std::max(1, spec.timeout_s));
  // The communicator's deadline comes from the same spec with GANTRY_COMM_TIMEOUT_S applied;
  // the engine's waits must use that one (launch already refused a malformed value).
  comm::CommOptions co = comm::CommOptions::FromSpec(spec);
  if (co.ApplyEnv().ok()) o.timeout = co.timeout;
  o.first_bucket_bytes = size_t(std::max<int64_t>(1, TunableInt("DP_FIRST_BUCKET_KB", 1024))) << 10;
  if (TunableString("DP_MAX_BUCKET_KB", "auto") != "auto") {
    const int64_t kb = TunableInt("DP_MAX_BUCKET_KB", int64_t(kMaxBucketBytes >> 10));
    o.max_bucket_bytes = size_t(std::max<int64_t>(0, kb)) << 10;
  }
  o.overlap_update = TunableInt("DP_OVERLAP_UPDATE", 1) != 0;
  o.symmetric_grads = TunableInt("DP_SYMMETRIC_GRADS", 1) != 0;
  o.inline_reduce = TunableAutoBool("DP_INLINE_REDUCE");
  o.fused_sum = TunableAutoBool("DP_FUSED_SUM");
  o.check_every = std::max<int64_t>(0, TunableInt("DP_CHECK_EVERY", o.check_every));
  o.straggler_every = std::max<int64_t>(0, TunableInt("DP_STRAGGLER_EVERY", o.straggler_every));
  o.straggler_ratio = TunableDouble("DP_STRAGGLER_RATIO", o.straggler_ratio);
  return o;
}

bool DataParallel::InlineReduceAuto(std::string_view backend, bool spare_cpu) {
  // shm moves every byte with this host's CPUs; with none spare, a progress thread can only run
  // by preempting compute, so doing the work in the callback saves the hand-offs (2 ranks x 1
  // thread on 2 cores: exposed communication ~10.5% -> ~7.5% with ranks bound, train/README.md).
  return backend == "shm" && !spare_cpu;
}

StatusOr<std::unique_ptr<DataParallel>> DataParallel::Create(comm::Communicator& comm, Model& model,
                                                             const OptimizerSpec& optimizer,
                                                             const DataParallelOptions& options) {
#if GANTRY_WITH_NCCL
  if (auto* nccl = dynamic_cast<comm::NcclCommunicator*>(&comm); nccl && model.device().is_cuda()) {
    if (nccl->device() != model.device().index) {
      return FailedPreconditionError(
          "data parallel: rank " + std::to_string(comm.rank()) + " has its model on cuda:" +
          std::to_string(model.device().index) + " but its NCCL communicator on cuda:" +
          std::to_string(nccl->device()) +
          "; use train.device: cuda (each rank then takes GPU rank % visible GPUs)");
    }
    // Bucket reductions wait for the backward work queued on the kernels' stream so far.
    nccl->SetStream(kernels::CurrentStream());
  }
#endif
  std::unique_ptr<DataParallel> dp(new DataParallel(comm, model, options));
  dp->inline_reduce_ = options.inline_reduce.value_or(
      InlineReduceAuto(comm.backend(), options.spare_cpu));
  dp->small_ = std::make_unique<HostCollectives>(comm, model.device(), options.work_wait());
  BucketOptions bo;
  bo.bucket_bytes = options.bucket_bytes;
  // The cap is for host memory, where the comm thread shares the cores with compute and small
  // buckets overlap best; NCCL keeps comm.bucket_mb as given (big buckets, fewer launches).
  const size_t max_bucket = options.max_bucket_bytes.value_or(
      dp->inline_reduce_ ? DataParallelOptions::kInlineMaxBucketBytes
                         : DataParallelOptions::kMaxBucketBytes);
  bo.max_bucket_bytes = model.device().is_cpu() ? max_bucket : 0;
  if (bo.max_bucket_bytes > 0) bo.bucket_bytes = std::min(bo.bucket_bytes, bo.max_bucket_bytes);
  bo.first_bucket_bytes = std::min(options.first_bucket_bytes, bo.bucket_bytes);
  bo.bf16 = options.bf16_reduce;
  bo.shard = options.zero1;
  bo.timeout = options.work_wait();
  // Before any other collective: every rank must plan the same buckets and run the same
  // collectives (a rank whose GANTRY_DP_* differs would read a peer's unfinished gradients
  // under the fused sum, or wait in another collective until the timeout).
  SharedSettings shared = {
      {"model parameter count", std::to_string(model.num_params())},
      {"bucket size (comm.bucket_mb, capped by GANTRY_DP_MAX_BUCKET_KB)",
       std::to_string(bo.bucket_bytes)},
      {"GANTRY_DP_FIRST_BUCKET_KB (as applied: at most the bucket size)",
       std::to_string(bo.first_bucket_bytes >> 10)},
      {"GANTRY_DP_MAX_BUCKET_KB (auto: set by GANTRY_DP_INLINE_REDUCE and the spare CPUs)",
       std::to_string(bo.max_bucket_bytes >> 10)},
      {"comm.bf16_reduce", options.bf16_reduce ? "true" : "false"},
      {"comm.zero1", options.zero1 ? "true" : "false"},
      {"GANTRY_DP_SYMMETRIC_GRADS", options.symmetric_grads ? "1" : "0"},
      // Both decide which collectives a step issues, and in which order (ZeRO-1 above all).
      {"GANTRY_DP_OVERLAP_UPDATE", options.overlap_update ? "1" : "0"},
      {"optimizer.grad_clip", std::to_string(optimizer.grad_clip)},
      {"GANTRY_DP_CHECK_EVERY", std::to_string(options.check_every)},
      {"GANTRY_DP_STRAGGLER_EVERY", std::to_string(options.straggler_every)}};
  shared.insert(shared.end(), options.must_match.begin(), options.must_match.end());
  GANTRY_RETURN_IF_ERROR(dp->AgreeOnSettings(shared));
  // Gradients in the backend's symmetric memory when it has some (shm: peers reduce straight
  // from each other's gradient buffers, no staging copies). Only the plain f32 allreduce uses it.
  bool symmetric = false;
  if (model.device().is_cpu() && !options.bf16_reduce && !options.zero1 &&
      options.symmetric_grads) {
    GANTRY_ASSIGN_OR_RETURN(auto mem,
                            comm.AllocateSymmetric(size_t(model.num_params()) * sizeof(float)));
    if (mem) {
      GANTRY_RETURN_IF_ERROR(model.AdoptGradientMemory(std::move(mem)));
      symmetric = true;
    }
  }
  GANTRY_ASSIGN_OR_RETURN(dp->reducer_, BucketReducer::Create(comm, model, bo));
  dp->symmetric_grads_ = symmetric;
  GANTRY_RETURN_IF_ERROR(dp->SetUpFusedSum());
  dp->sharded_spec_ = optimizer;
  if (options.zero1) {
    GANTRY_ASSIGN_OR_RETURN(dp->sharded_,
                            ShardedOptimizer::Create(optimizer, model, comm, *dp->reducer_));
  }
  model.SetGradReadyCallback([d = dp.get()](int64_t begin) { d->OnGradReady(begin); });
  GANTRY_LOG(INFO, "data parallel ready")
      .Field("world", comm.size())
      .Field("backend", std::string(comm.backend()))
      .Field("buckets", int64_t(dp->buckets().size()))
      .Field("bucket_mb", double(bo.bucket_bytes) / double(1 << 20))
      .Field("bf16_reduce", options.bf16_reduce)
      .Field("symmetric_grads", symmetric)
      .Field("inline_reduce", dp->inline_reduce_)
      .Field("fused_sum", dp->fused_sum())
      .Field("zero1", options.zero1);
  return dp;
}

DataParallel::~DataParallel() {
  model_.SetGradReadyCallback(nullptr);
  // A step that failed midway (in Backward) can leave bucket collectives running into the
  // gradient and staging buffers: they end (the caller aborts the communicator on an error,
  // so at once) before those buffers are freed.
  if (reducer_) reducer_->Quiesce();
}

Status DataParallel::SetUpFusedSum() {
  const int n = world();
  const bool wanted = symmetric_grads_ && options_.overlap_update &&
                      n <= int(kernels::kMaxGradTerms) &&
                      options_.fused_sum.value_or(n <= DataParallelOptions::kFusedSumMaxWorld);
  comm::SymmetricPeers* peers = wanted ? comm_.symmetric_peers() : nullptr;
  std::vector<const float*> bases;
  if (peers != nullptr) {
    const size_t bytes = size_t(model_.num_params()) * sizeof(float);
    for (int r = 0; r < n; ++r) {
      bases.push_back(static_cast<const float*>(peers->Peer(model_.flat_grads().raw(), bytes, r)));
      if (bases.back() == nullptr) peers = nullptr;
    }
  }
  // Every rank must take the same path, and count its signals from the same point (an
  // earlier DataParallel on this communicator may have raised them).
  struct Mine {
    uint32_t able;
    uint32_t pad;
    uint64_t ready, consumed;
  } mine{peers != nullptr, 0, 0, 0};
  if (peers != nullptr) {
    mine.ready = peers->PeekSignal(rank(), kReadySignal);
    mine.consumed = peers->PeekSignal(rank(), kConsumedSignal);
  }
  std::vector<Mine> all(static_cast<size_t>(n));
  GANTRY_RETURN_IF_ERROR(small_->Allgather(&mine, all.data(), sizeof(Mine) / 4));
  for (const Mine& m : all) {
    if (!m.able) return OkStatus();
    fused_.base = std::max(fused_.base, m.ready);
    fused_.steps = std::max(fused_.steps, m.consumed);
  }
  peers->Signal(kReadySignal, fused_.base);
  peers->Signal(kConsumedSignal, fused_.steps);
  peers_ = peers;
  grad_bases_ = std::move(bases);
  return OkStatus();
}

void DataParallel::BeginBackward() {
  reducer_->Arm();
  updating_ = {};
  fused_.active = false;
  fused_.published = 0;
  fused_.wait_s = 0;
  // Backward is about to overwrite the gradients the peers may still be summing.
  fused_.consumed_wait = peers_ != nullptr ? WaitPeersConsumed() : OkStatus();
}

Status DataParallel::WaitPeersConsumed() {
  const auto t0 = std::chrono::steady_clock::now();
  Status s;
  for (int r = 0; r < world() && s.ok(); ++r) {
    if (r == rank() || peers_->PeekSignal(r, kConsumedSignal) >= fused_.steps) continue;
    s = peers_->WaitSignal(r, kConsumedSignal, fused_.steps, options_.timeout,
                           "data parallel (fused sum): rank " + std::to_string(rank()) +
                               " waiting to reuse its gradient buffer after fused step " +
                               std::to_string(fused_.steps));
  }
  fused_.wait_s += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return s;
}

Status DataParallel::ReduceGradients() {
  if (fused_.active) {
    return FailedPreconditionError(
        "data parallel: this step sums gradients inside the update (fused sum); finish it with "
        "ReduceAndUpdate, or begin it with BeginBackward() to reduce them first");
  }
  return reducer_->Finish();
}

void DataParallel::PublishFusedBuckets(int64_t begin) {
  const std::vector<Bucket>& b = reducer_->buckets();
  const size_t before = fused_.published;
  while (fused_.published < b.size() && b[fused_.published].begin >= begin) ++fused_.published;
  if (fused_.published != before) {
    peers_->Signal(kReadySignal, fused_.base + fused_.published);  // release: grads visible
  }
}

void DataParallel::UpdateFusedBuckets(bool block) {
  Updating& u = updating_;
  while (u.status.ok() && u.next < fused_.published) {
    const uint64_t need = fused_.base + u.next + 1;
    for (int r = 0; r < world() && u.status.ok(); ++r) {
      if (r == rank() || peers_->PeekSignal(r, kReadySignal) >= need) continue;
      if (!block) return;
      const auto t0 = std::chrono::steady_clock::now();
      u.status = peers_->WaitSignal(
          r, kReadySignal, need, options_.timeout,
          "data parallel (fused sum): rank " + std::to_string(rank()) + " waiting for bucket " +
              std::to_string(u.next) + " of step " + std::to_string(u.step + 1) + " from rank " +
              std::to_string(r));
      fused_.wait_s += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    }
    if (!u.status.ok()) return;
    const Bucket& b = reducer_->buckets()[u.next++];
    // Every rank's gradients of the bucket, summed in rank order inside the update pass.
    u.status = u.optimizer->StepRange(u.step, u.lr, b.begin, b.end, &u.sum_sq, grad_bases_);
  }
}

Status DataParallel::BroadcastFromRank0(const std::vector<Tensor>& state) {
  std::vector<Tensor> all = {model_.flat_params()};
  all.insert(all.end(), state.begin(), state.end());
  std::vector<comm::WorkPtr> work;
  for (const Tensor& t : all) {
    work.push_back(comm_.Broadcast(t.raw(), size_t(t.numel()), comm::DataType::kF32, 0));
  }
  Status status;
  for (auto& w : work) {
    Status s = w->Wait(options_.work_wait());
    if (!s.ok() && status.ok()) status = s.Prepend("broadcasting parameters from rank 0");
  }
  // The parameters now hold rank 0's values (or part of them), not what this rank's optimizer
  // wrote: a bf16 copy it made before is stale (kernels/runtime.h).
  kernels::NewMatmulWeightsEpochAfterLoad();
  return status;
}

Status DataParallel::AgreeOnSettings(const SharedSettings& settings) {
  if (world() == 1) return OkStatus();
  const std::string mine = EncodeSettings(settings);
  const int32_t len = int32_t(mine.size());
  std::vector<int32_t> lens(static_cast<size_t>(world()), 0);
  GANTRY_RETURN_IF_ERROR(small_->Allgather(&len, lens.data(), 1));
  const size_t words = (size_t(*std::max_element(lens.begin(), lens.end())) + 3) / 4;
  std::vector<int32_t> send(words, 0), all(words * size_t(world()));
  std::memcpy(send.data(), mine.data(), mine.size());
  GANTRY_RETURN_IF_ERROR(small_->Allgather(send.data(), all.data(), words));
  std::vector<std::string> blobs;
  for (int r = 0; r < world(); ++r) {
    const char* p = reinterpret_cast<const char*>(all.data() + size_t(r) * words);
    blobs.emplace_back(p, size_t(std::clamp<int32_t>(lens[size_t(r)], 0, int32_t(words * 4))));
  }
  return CompareSettings("data parallel", blobs);
}

Status DataParallel::WhileRank0Works(const std::function<Status()>& work) {
  if (rank() != 0) {
    for (;;) {  // rank 0's ticks, until its "done"
      int32_t done = 0;
      GANTRY_RETURN_IF_ERROR(small_->Broadcast(&done, 1, 0).Prepend(
          "waiting for rank 0's checkpoint I/O (it sends a word every few seconds while it works)"));
      if (done != 0) return OkStatus();
    }
  }
  Status result, tick_status;
  if (comm_.memory() != comm::MemoryKind::kHost) {
    result = work();  // staging a tick needs the device on another thread: no ticks
  } else {
    const auto tick = std::clamp<std::chrono::milliseconds>(
        options_.timeout / 4, std::chrono::milliseconds(1), std::chrono::seconds(10));
    // Not forever: I/O stuck past this (a hung mount) lets the other ranks time out, so the
    // job fails and is restarted instead of hanging with every rank alive.
    using SteadyClock = std::chrono::steady_clock;
    const auto limit =
        std::max<SteadyClock::duration>(options_.timeout * 10, std::chrono::minutes(30));
    const auto started = SteadyClock::now();
    std::mutex mu;
    std::condition_variable cv;
    bool finished = false;
    // The helper thread is the only one using the communicator until it is joined.
    std::thread ticker([&] {
      std::unique_lock<std::mutex> lock(mu);
      while (!cv.wait_for(lock, tick, [&] { return finished; })) {
        if (SteadyClock::now() - started > limit) {
          GANTRY_LOG(ERROR, "rank 0's checkpoint I/O is stuck; the other ranks stop waiting")
              .Field("waited_s",
                     std::chrono::duration<double>(SteadyClock::now() - started).count());
          return;
        }
        lock.unlock();
        int32_t still = 0;
        Status s = small_->Broadcast(&still, 1, 0);
        lock.lock();
        if (!s.ok()) {
          tick_status = s;
          return;
        }
      }
    });
    result = work();
    {
      std::lock_guard<std::mutex> lock(mu);
      finished = true;
    }
    cv.notify_all();
    ticker.join();
  }
  GANTRY_RETURN_IF_ERROR(tick_status);
  int32_t done = 1;
  GANTRY_RETURN_IF_ERROR(small_->Broadcast(&done, 1, 0));
  return result;
}

Status DataParallel::BroadcastBlob(std::string* blob) {
  int32_t n = int32_t(blob->size());
  GANTRY_RETURN_IF_ERROR(small_->Broadcast(&n, 1, 0));
  std::vector<int32_t> words((size_t(n) + 3) / 4);
  if (rank() == 0) std::memcpy(words.data(), blob->data(), blob->size());
  GANTRY_RETURN_IF_ERROR(small_->Broadcast(words.data(), words.size(), 0));
  blob->assign(reinterpret_cast<const char*>(words.data()), size_t(n));
  return OkStatus();
}

StatusOr<float> DataParallel::ReduceAndUpdate(Optimizer* optimizer, int64_t step, float lr) {
  const OptimizerSpec& spec = sharded_ ? sharded_spec_ : optimizer->spec();
  if (spec.grad_clip > 0 || !options_.overlap_update) {
    GANTRY_RETURN_IF_ERROR(ReduceGradients());
    GANTRY_ASSIGN_OR_RETURN(float norm, ClipGradients(optimizer));
    GANTRY_RETURN_IF_ERROR(Update(optimizer, step, lr));
    return norm;
  }
  if (sharded_) return sharded_->ReduceAndStep(step, lr);
  if (fused_.active) {
    PublishFusedBuckets(0);  // whatever backward did not report
    UpdateFusedBuckets(/*block=*/true);
    const Updating done = std::exchange(updating_, {});
    fused_.active = false;
    if (!done.status.ok()) return done.status;
    fused_.base += reducer_->buckets().size();
    peers_->Signal(kConsumedSignal, ++fused_.steps);  // done reading the peers' gradients
    return float(std::sqrt(done.sum_sq));
  }
  reducer_->IssueRemaining();
  if (updating_.optimizer != optimizer) updating_ = {optimizer, step, lr};
  UpdateFinishedBuckets(/*block=*/true);
  const Updating done = std::exchange(updating_, {});
  if (!done.status.ok()) return done.status;
  // On a GPU the update cannot add up the squares as it goes (a CPU-only extra of the update
  // kernels): the norm of the summed gradients, which the update leaves as they were.
  if (!model_.device().is_cpu()) return kernels::L2Norm(model_.flat_grads());
  return float(std::sqrt(done.sum_sq));
}

void DataParallel::BeginBackward(Optimizer* optimizer, int64_t step, float lr) {
  BeginBackward();
  if (optimizer != nullptr && !sharded_ && options_.overlap_update &&
      optimizer->spec().grad_clip <= 0) {
    updating_ = {optimizer, step, lr};
    updating_.status = fused_.consumed_wait;
    fused_.active = peers_ != nullptr;
  }
}

void DataParallel::OnGradReady(int64_t begin) {
  if (fused_.active) {  // no collective: publish, then sum and update what every rank has
    PublishFusedBuckets(begin);
    UpdateFusedBuckets(/*block=*/false);
    return;
  }
  reducer_->OnGradReady(begin);
  if (updating_.optimizer != nullptr) UpdateFinishedBuckets(/*block=*/inline_reduce_);
}

void DataParallel::UpdateFinishedBuckets(bool block) {
  Updating& u = updating_;
  while (u.next < reducer_->issued()) {
    if (!block && !reducer_->Done(u.next)) return;
    const size_t i = u.next++;
    Status s = reducer_->Wait(i);  // every bucket is waited, even after an error
    if (!s.ok() && u.status.ok()) u.status = s;
    if (!u.status.ok()) continue;
    // One pass per bucket: the update and its squared gradient norm, while the sum is in cache.
    const Bucket& b = reducer_->buckets()[i];
    double* sum_sq = model_.device().is_cpu() ? &u.sum_sq : nullptr;  // see ReduceAndUpdate
    if (Status st = u.optimizer->StepRange(u.step, u.lr, b.begin, b.end, sum_sq); !st.ok()) {
      u.status = st;
    }
  }
}

StatusOr<float> DataParallel::ClipGradients(Optimizer* optimizer) {
  if (sharded_) return sharded_->ClipGradients();
  return optimizer->ClipGradients();
}

Status DataParallel::Update(Optimizer* optimizer, int64_t step, float lr) {
  if (sharded_) return sharded_->Step(step, lr);
  return optimizer->Step(step, lr);
}

StatusOr<uint32_t> DataParallel::ParamChecksum() {
  Tensor host = model_.flat_params();
  if (!host.device().is_cpu()) {
    if (host_params_.numel() != host.numel()) {
      GANTRY_ASSIGN_OR_RETURN(host_params_, Tensor::Empty(host.shape(), kernels::DType::kF32));
    }
    GANTRY_RETURN_IF_ERROR(kernels::Copy(model_.flat_params(), host_params_));
    host = host_params_;
  }
  return storage::Crc32c(
      std::span<const std::byte>(static_cast<const std::byte*>(host.raw()), host.nbytes()));
}

std::vector<int> DataParallel::DivergedRanks(const std::vector<uint32_t>& sums) {
  std::map<uint32_t, int> count;
  for (uint32_t s : sums) ++count[s];
  // The largest group; among equal ones the group of the lowest rank.
  uint32_t ref = sums.empty() ? 0 : sums[0];
  for (uint32_t s : sums) {
    if (count[s] > count[ref]) ref = s;
  }
  std::vector<int> out;
  for (size_t r = 0; r < sums.size(); ++r) {
    if (sums[r] != ref) out.push_back(int(r));
  }
  return out;
}

Status DataParallel::CheckParameters(int64_t step, bool force) {
  if (!force && (options_.check_every <= 0 || step % options_.check_every != 0)) return OkStatus();
  GANTRY_ASSIGN_OR_RETURN(uint32_t mine, ParamChecksum());
  std::vector<uint32_t> all(static_cast<size_t>(world()));
  GANTRY_RETURN_IF_ERROR(small_->Allgather(&mine, all.data(), 1));
  const std::vector<int> bad = DivergedRanks(all);
  if (bad.empty()) return OkStatus();
  std::string names, sums;
  for (int r : bad) names += (names.empty() ? "" : ", ") + std::to_string(r);
  for (size_t r = 0; r < all.size(); ++r) {
    sums += (r ? " " : "") + std::to_string(r) + ":" + storage::Crc32cHex(all[r]);
  }
  if (2 * (all.size() - bad.size()) <= all.size()) {  // no majority: nobody to blame
    return DataLossError("parameters diverged across ranks at step " + std::to_string(step) +
                         " with no majority (crc32c per rank " + sums + "): which ranks are "
                         "wrong cannot be told; a rank computed different gradients or its "
                         "memory was corrupted: check the hosts, then resume from the last "
                         "checkpoint");
  }
  return DataLossError("parameters diverged across ranks at step " + std::to_string(step) +
                       ": rank(s) " + names + " differ from the others (crc32c per rank " + sums +
                       "); a rank computed different gradients or its memory was "
                       "corrupted: check those ranks' hosts, then resume from the last checkpoint");
}

std::vector<int> DataParallel::FindStragglers(const std::vector<StepTimes>& times, double ratio) {
  std::vector<double> busy;
  for (const StepTimes& t : times) busy.push_back(t.compute + t.data_wait);
  if (busy.size() < 2) return {};
  std::vector<double> sorted = busy;
  std::sort(sorted.begin(), sorted.end());
  // Lower median: with 2 ranks a rank is named when it is ratio x slower than the other.
  const double median = sorted[(sorted.size() - 1) / 2];
  std::vector<int> out;
  for (size_t r = 0; r < busy.size(); ++r) {
    if (busy[r] > ratio * median && busy[r] > 0) out.push_back(int(r));
  }
  return out;
}

Status DataParallel::RecordStep(int64_t step, const StepTimes& t) {
  window_.compute += t.compute;
  window_.data_wait += t.data_wait;
  window_.comm_wait += t.comm_wait;
  ++window_steps_;
  if (options_.straggler_every <= 0 || step % options_.straggler_every != 0) return OkStatus();
  const float n = float(std::max<int64_t>(1, window_steps_));
  float mine[3] = {float(window_.compute) / n, float(window_.data_wait) / n,
                   float(window_.comm_wait) / n};
  window_ = StepTimes{};
  window_steps_ = 0;
  std::vector<float> all(3 * size_t(world()));
  GANTRY_RETURN_IF_ERROR(small_->Allgather(mine, all.data(), 3));
  std::vector<StepTimes> times(static_cast<size_t>(world()));
  for (int r = 0; r < world(); ++r) times[r] = {all[3 * r], all[3 * r + 1], all[3 * r + 2]};
  stragglers_ = FindStragglers(times, options_.straggler_ratio);
  MetricsRegistry& m = MetricsRegistry::Default();
  for (int r = 0; r < world(); ++r) {
    const bool slow = std::find(stragglers_.begin(), stragglers_.end(), r) != stragglers_.end();
    m.GetGauge("gantry_train_straggler", "1 when the rank's step time exceeds the ratio x median",
               {{"rank", std::to_string(r)}})
        .Set(slow ? 1 : 0);
    // The gauge holds only the last window (straggler_every steps, often milliseconds); the
    // counter keeps every report for a scraper's rate()/increase().
    m.GetCounter("gantry_train_straggler_reports_total",
                 "Straggler windows that named this rank (busy time > ratio x median)",
                 {{"rank", std::to_string(r)}})
        .Inc(slow ? 1 : 0);
  }
  const char* parts[3] = {"compute", "data_wait", "comm_wait"};
  for (int k = 0; k < 3; ++k) {
    m.GetGauge("gantry_train_step_part_seconds", "mean seconds per step of this rank, by part",
               {{"part", parts[k]}})
        .Set(mine[k]);
  }
  if (rank() != 0) return OkStatus();
  std::vector<double> busy;
  for (const StepTimes& x : times) busy.push_back(x.compute + x.data_wait);
  std::vector<double> sorted = busy;
  std::sort(sorted.begin(), sorted.end());
  for (int r : stragglers_) {
    GANTRY_LOG(WARNING, "straggler rank")
        .Field("step", step)
        .Field("straggler", r)
        .Field("busy_s", busy[r])
        .Field("median_busy_s", sorted[(sorted.size() - 1) / 2])
        .Field("compute_s", times[r].compute)
        .Field("data_wait_s", times[r].data_wait)
        .Field("comm_wait_s", times[r].comm_wait);
  }
  return OkStatus();
}

}  // namespace gantry::train
