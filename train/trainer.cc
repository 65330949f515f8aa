// Trainer: build from the JobSpec, restore, and the step loop.
#include "train/trainer.h"

#include <cmath>
#include <cstdlib>
#include <set>

#include "base/logging.h"
#include "base/tunables.h"
#include "kernels/runtime.h"
#include "train/cpu_binding.h"
#include "train/data_prefetch.h"

namespace gantry::train {

using Clock = std::chrono::steady_clock;

namespace {
constexpr uint64_t kTrainerRngSalt = 0x7A11E5ull;
}  // namespace

StatusOr<std::unique_ptr<Trainer>> Trainer::Create(const JobSpec& spec,
                                                   const TrainerOptions& options) {
  std::unique_ptr<Trainer> t(new Trainer());
  t->spec_ = spec;
  t->opts_ = options;
  GANTRY_RETURN_IF_ERROR(t->Build());
  return t;
}

// Automatic threads with several ranks on this host: share the cores instead of each rank
// taking all of them (oversubscribed GEMMs run several times slower). The local rank count
// comes from LOCAL_WORLD_SIZE (gantry workers, torchrun) or Open MPI's local size.
void Trainer::SplitThreadsAmongLocalRanks() {
  if (std::getenv("GANTRY_NUM_THREADS") != nullptr) return;  // the operator decided
  if (LocalRankBound()) return;  // the CPU set is already this rank's share (cpu_binding.h)
  const int local = LocalWorldFromEnv();
  if (local > 1) kernels::SetNumThreads(std::max(1, kernels::NumThreads() / local));
}

// GANTRY_DATA_PREFETCH=auto: a prefetch thread only pays where a core would otherwise idle:
// a spare core, or one process whose compute threads span several cores (they idle in its
// single-threaded stretches: small GEMMs, elementwise ops below the split size). mlp-mnist at
// 2 threads on 2 cores: bf16 1.91 -> 1.67 ms per step, f32 2.50 -> 2.44-2.50; gpt-tiny
// unchanged. Several local ranks with every core computing (2 ranks x 1 thread on 2 cores):
// off, it slowed mlp-mnist data-parallel steps by 5-8% (interleaved A/B) by taking turns with
// compute and communication.
bool Trainer::PrefetchData() {
  return TunableAutoBool("DATA_PREFETCH")
      .value_or(SpareCpu() || (LocalWorldFromEnv() == 1 && kernels::NumThreads() > 1 &&
                               kernels::UsableCpus() > 1));
}

bool Trainer::SpareCpu() {
  if (LocalRankBound()) return kernels::UsableCpus() > kernels::NumThreads();
  return kernels::UsableCpus() > LocalWorldFromEnv() * kernels::NumThreads();
}

Trainer::~Trainer() {
  if (model_) kernels::ClearMatmulWeightsIf(model_->flat_params().raw());
}

Status Trainer::Build() {
  if (spec_.kind != JobKind::kTrain) {
    return InvalidArgumentError(spec_.source + ": kind is " + JobKindName(spec_.kind) +
                                ", `gantry train` needs kind: train");
  }
  if (opts_.comm != nullptr) {
    opts_.rank = opts_.comm->rank();
    opts_.world = opts_.comm->size();
  }
  if (opts_.rank != 0) opts_.progress = ProgressMode::kOff;
  RegisterMetrics();
  TrainSpec& ts = spec_.train;
  if (opts_.steps >= 0) ts.steps = opts_.steps;
  if (!opts_.device.empty()) ts.device = opts_.device;
  if (opts_.threads >= 0) ts.threads = opts_.threads;
  if (!opts_.checkpoint_dir.empty()) ts.checkpoint_uri = opts_.checkpoint_dir;
  if (ts.checkpoint_uri.empty()) ts.checkpoint_uri = ".gantry/ckpt/" + spec_.name;
  // The overrides obey the ranges of the fields they replace (--steps 0 wrote an untrained
  // checkpoint). Not the spec's cross-field rules: --device cuda on a spec without
  // resources.gpus_per_rank (a scheduler setting) and --steps below the warm-up for a quick
  // run are what the flags are for.
  if (opts_.steps == 0 || opts_.steps > (int64_t(1) << 40)) {
    return InvalidArgumentError("--steps " + std::to_string(opts_.steps) +
                                ": must be in [1, 2^40] (train.steps' range)");
  }
  if (opts_.threads > 4096) {
    return InvalidArgumentError("--threads " + std::to_string(opts_.threads) +
                                ": must be in [0, 4096] (train.threads' range)");
  }
  if (!opts_.device.empty()) {
    if (auto d = kernels::ParseDevice(opts_.device); !d.ok()) {
      return Status(d.status()).Prepend("--device");
    }
  }
  checkpoint_uri_ = ts.checkpoint_uri;
  total_steps_ = ts.steps;
  if (ts.threads > 0) kernels::SetNumThreads(ts.threads);
  if (ts.threads == 0 && opts_.world > 1) SplitThreadsAmongLocalRanks();
  GANTRY_ASSIGN_OR_RETURN(kernels::Device device, kernels::ParseDevice(ts.device));
  if (device.is_cuda() && ts.device == "cuda" && opts_.world > 1 &&
      kernels::CudaDeviceCount() > 0) {
    device.index = opts_.rank % kernels::CudaDeviceCount();  // as nccl picks (rank % visible)
  }
  if (device.is_cuda() && device.index >= kernels::CudaDeviceCount()) {
    return FailedPreconditionError(
        "train.device " + ts.device + " is not available (" +
        std::to_string(kernels::CudaDeviceCount()) + " CUDA devices, built with CUDA: " +
        (kernels::BuiltWithCuda() ? "yes" : "no") + "); use --device cpu");
  }
  SetLogContext("job", spec_.name);
  SetLogContext("rank", int64_t(opts_.rank));
  const bool bf16 = ts.precision == "bf16";
  GANTRY_RETURN_IF_ERROR(kernels::SetMatmulPrecisionFor(
      device, bf16 ? kernels::MatmulPrecision::kBf16 : kernels::MatmulPrecision::kF32));
  if (bf16) {
    GANTRY_LOG(INFO, "mixed precision: matmuls on bf16 inputs, f32 accumulation")
        .Field("device", ts.device)
        .Field("cpu_bf16", device.is_cuda() ? std::string("unused") : kernels::CpuBf16Support());
  }
  const int batch = spec_.data.batch_per_rank;
  GANTRY_ASSIGN_OR_RETURN(model_, Model::Create(spec_.model, batch, device));
  // CPU bf16: parameter matrices are cast once per step (TrainStep starts a new weights epoch);
  // f32: no range (a previous job's must not linger).
  const bool cpu_bf16 = bf16 && !device.is_cuda();
  kernels::SetMatmulWeights(cpu_bf16 ? model_->flat_params().raw() : nullptr,
                            cpu_bf16 ? model_->flat_params().nbytes() : 0);
  if (opts_.comm != nullptr && opts_.world > 1) {
    DataParallelOptions dpo = DataParallelOptions::FromSpec(spec_.comm);
    dpo.spare_cpu = SpareCpu();
    // The learning-rate schedule spans the step count: ranks with another --steps diverge.
    dpo.must_match = {{"train.steps (--steps)", std::to_string(total_steps_)}};
    // Every other field that decides what the ranks compute together: a rank started with
    // another spec (heads, lr, seed, data) trained on silently when the parameter counts
    // happened to agree. Left out: what each rank may choose for itself.
    static const std::set<std::string> kPerRank = {
        "train.steps", "train.keep_last", "train.checkpoint_uri", "train.log_every",
        "train.device", "train.threads"};
    for (auto& [field, value] : JobSpecFields(spec_)) {
      const std::string section = field.substr(0, field.find('.'));
      if (section != "model" && section != "data" && section != "optimizer" &&
          section != "train") {
        continue;  // name, resources, restarts: the launcher's; comm: compared by comm itself
      }
      if (!kPerRank.contains(field)) dpo.must_match.emplace_back(field, std::move(value));
    }
    GANTRY_ASSIGN_OR_RETURN(dp_, DataParallel::Create(*opts_.comm, *model_, spec_.optimizer, dpo));
  }
  if (dp_ == nullptr || dp_->sharded() == nullptr) {
    GANTRY_ASSIGN_OR_RETURN(optimizer_, Optimizer::Create(spec_.optimizer, *model_));
  }
  DataOptions dopts{batch, spec_.data.seed, opts_.rank, opts_.world};
  GANTRY_ASSIGN_OR_RETURN(data_, OpenDataSource(spec_.data, spec_.model, dopts));
  GANTRY_ASSIGN_OR_RETURN(BatchLayout layout, BatchLayoutFor(spec_.model, batch));
  // The next batch is read on a background thread while this step computes.
  if (PrefetchData()) {
    GANTRY_ASSIGN_OR_RETURN(data_, PrefetchingDataSource::Wrap(std::move(data_), layout));
  }
  GANTRY_ASSIGN_OR_RETURN(host_batch_, AllocateBatch(layout, kernels::Device::Cpu()));
  device_batch_ = host_batch_;
  if (!device.is_cpu()) {
    GANTRY_ASSIGN_OR_RETURN(device_batch_, AllocateBatch(layout, device));
  }
  // Only rank 0 reads and writes checkpoints: the other ranks need not reach the store (a
  // ceph:// store without a keyring on their hosts used to fail them here).
  if (opts_.rank == 0 || !dp_) {
    GANTRY_ASSIGN_OR_RETURN(checkpointer_, Checkpointer::Open(checkpoint_uri_, ts.keep_last));
  }
  rng_.Seed(MixSeed(spec_.data.seed, kTrainerRngSalt));
  return model_->InitParams(spec_.data.seed);
}

StatusOr<std::vector<NamedTensor>> Trainer::CheckpointTensors() {
  std::vector<NamedTensor> out;
  for (const ParamInfo& p : model_->params()) out.push_back({p.name, model_->Param(p)});
  const std::vector<std::pair<std::string, kernels::Tensor>>* state = nullptr;
  if (optimizer_) {
    state = &optimizer_->state();
  } else {
    GANTRY_ASSIGN_OR_RETURN(state, dp_->sharded()->FullState());
  }
  for (const auto& [state_name, flat] : *state) {
    for (const ParamInfo& p : model_->params()) {
      out.push_back({"optimizer." + state_name + "." + p.name, flat.View(p.offset, p.shape)});
    }
  }
  return out;
}

std::vector<kernels::Tensor> Trainer::FullStateTensors() {
  std::vector<kernels::Tensor> out;
  if (optimizer_) {
    for (const auto& [name, t] : optimizer_->state()) out.push_back(t);
  }
  return out;
}

Status Trainer::AgreeWithRank0(Status status) {
  if (!dp_) return status;
  std::string blob = status.ok() ? "" : status.ToString();
  GANTRY_RETURN_IF_ERROR(dp_->BroadcastBlob(&blob));
  if (opts_.rank == 0) return status;
  if (blob.empty()) return OkStatus();
  return FailedPreconditionError("rank 0 stopped the job: " + blob);
}

Status Trainer::CheckCompatible(const LoadedCheckpoint& ck) const {
  const CheckpointMeta& meta = ck.meta;
  if (!(meta.model == model_->spec()) || meta.optimizer.type != spec_.optimizer.type) {
    return FailedPreconditionError(
        "checkpoint " + checkpoint_uri_ + "/" + ck.name + " was written for model " +
        meta.model.type + " with optimizer " + meta.optimizer.type +
        " and a different configuration; use another --checkpoint-dir or remove it");
  }
  return OkStatus();
}

Status Trainer::ApplyMeta(const CheckpointMeta& meta, const std::string& name) {
  if (!meta.data_uri.empty()) {
    // The position is a batch of an order fixed by these: with others the run continues,
    // but it no longer reproduces the uninterrupted run. Say so, naming each.
    auto differs = [&](const char* what, const std::string& then, const std::string& now) {
      if (then == now) return;
      GANTRY_LOG(WARNING, "resuming with other data settings than the checkpoint's: the run "
                          "continues, but not as the uninterrupted run would")
          .Field("checkpoint", name)
          .Field("setting", what)
          .Field("checkpoint_value", then)
          .Field("value", now);
    };
    differs("data.uri", meta.data_uri, spec_.data.uri);
    differs("data.seed", std::to_string(meta.data_seed), std::to_string(spec_.data.seed));
    differs("data.batch_per_rank", std::to_string(meta.batch_per_rank),
            std::to_string(spec_.data.batch_per_rank));
    differs("world size", std::to_string(meta.world_size), std::to_string(opts_.world));
  }
  GANTRY_RETURN_IF_ERROR(data_->Restore(meta.data));
  rng_.set_state(meta.rng);
  step_ = meta.step;
  last_saved_step_ = step_;
  GANTRY_LOG(INFO, "resumed from checkpoint")
      .Field("checkpoint", name)
      .Field("store", checkpoint_uri_)
      .Field("step", step_)
      .Field("epoch", meta.data.epoch);
  return OkStatus();
}

StatusOr<bool> Trainer::Restore() {
  // Parameters are about to be loaded, not written by the optimizer: whatever bf16 copy the
  // optimizer made before is stale (kernels/runtime.h). Also on failure (a partial load).
  struct NewEpoch {
    ~NewEpoch() { kernels::NewMatmulWeightsEpochAfterLoad(); }
  } new_epoch;
  if (dp_) return RestoreDistributed();
  StatusOr<LoadedCheckpoint> ck = checkpointer_->ReadNewestValid();
  if (!ck.ok()) {
    if (ck.status().code() == StatusCode::kNotFound) return false;
    return ck.status();
  }
  GANTRY_RETURN_IF_ERROR(CheckCompatible(*ck));
  GANTRY_ASSIGN_OR_RETURN(std::vector<NamedTensor> tensors, CheckpointTensors());
  GANTRY_RETURN_IF_ERROR(ck->Restore(tensors));
  GANTRY_RETURN_IF_ERROR(ApplyMeta(ck->meta, ck->name));
  return true;
}

// Only rank 0 reads the checkpoint (other ranks need not see its storage): it restores its
// own tensors, then broadcasts the manifest, the parameters and the full optimizer state.
StatusOr<bool> Trainer::RestoreDistributed() {
  std::string manifest, name;
  // The read may take longer than the comm timeout (a big checkpoint on Ceph): the other
  // ranks wait for it without a deadline of their own (DataParallel::WhileRank0Works).
  Status status = dp_->WhileRank0Works([&] {
    StatusOr<LoadedCheckpoint> ck = checkpointer_->ReadNewestValid();
    Status s;
    if (ck.ok()) {
      s = CheckCompatible(*ck);
      StatusOr<std::vector<NamedTensor>> tensors = CheckpointTensors();
      if (s.ok()) s = tensors.status();
      if (s.ok()) s = ck->Restore(*tensors);
      manifest = EncodeManifest(ck->meta, {}, 0);
      name = ck->name;
    } else if (ck.status().code() != StatusCode::kNotFound) {
      s = ck.status();
    }
    return s;
  });
  GANTRY_RETURN_IF_ERROR(AgreeWithRank0(status));
  GANTRY_RETURN_IF_ERROR(dp_->BroadcastBlob(&manifest));
  GANTRY_RETURN_IF_ERROR(dp_->BroadcastBlob(&name));
  if (manifest.empty()) return false;
  CheckpointMeta meta;
  std::vector<TensorRecord> records;
  uint64_t bytes = 0;
  GANTRY_RETURN_IF_ERROR(
      DecodeManifest(manifest, "checkpoint manifest from rank 0", &meta, &records, &bytes));
  if (dp_->sharded()) {  // parameters to all; each rank receives only its state pieces
    GANTRY_RETURN_IF_ERROR(dp_->BroadcastFromRank0({}));
    GANTRY_RETURN_IF_ERROR(dp_->sharded()->ScatterStateFromRank0());
  } else {
    GANTRY_RETURN_IF_ERROR(dp_->BroadcastFromRank0(FullStateTensors()));
  }
  GANTRY_RETURN_IF_ERROR(ApplyMeta(meta, name));
  return true;
}

Status Trainer::SaveCheckpoint() {
  // Ranks step in lockstep with identical parameters, optimizer state, data position and RNG,
  // so rank 0's checkpoint is everyone's (with ZeRO-1 the state is gathered first).
  // With ZeRO-1 the state pieces are sent to rank 0 for the save and released after it.
  if (dp_ && dp_->sharded()) GANTRY_RETURN_IF_ERROR(dp_->sharded()->GatherState().status());
  auto save = [&]() -> Status {
    CheckpointMeta meta;
    meta.step = step_;
    meta.data = data_->position();
    meta.rng = rng_.state();
    meta.model = model_->spec();
    meta.optimizer = spec_.optimizer;
    meta.tokenizer = data_->tokenizer();
    meta.job = spec_.name;
    meta.data_uri = spec_.data.uri;
    meta.data_seed = spec_.data.seed;
    meta.batch_per_rank = spec_.data.batch_per_rank;
    meta.world_size = opts_.world;
    StatusOr<std::vector<NamedTensor>> tensors = CheckpointTensors();
    Status s = tensors.ok() ? checkpointer_->Save(meta, *tensors) : tensors.status();
    if (dp_ && dp_->sharded()) dp_->sharded()->ReleaseFullState();
    if (s.ok()) {
      metrics_.checkpoints->Inc();
      GANTRY_LOG(INFO, "checkpoint saved")
          .Field("checkpoint", CheckpointName(step_))
          .Field("store", checkpoint_uri_)
          .Field("step", step_);
    }
    return s;
  };
  // Only rank 0 writes; the others wait for it however long the write takes.
  const Status saved = dp_ ? dp_->WhileRank0Works(save) : save();
  GANTRY_RETURN_IF_ERROR(AgreeWithRank0(saved));
  last_saved_step_ = step_;
  return OkStatus();
}

Status Trainer::LoadBatch() {
  const bool same = device_batch_.inputs.raw() == host_batch_.inputs.raw();
  GANTRY_RETURN_IF_ERROR(data_->Next(host_batch_));  // may swap in other tensors (prefetch)
  if (same) {
    device_batch_ = host_batch_;
    return OkStatus();
  }
  GANTRY_RETURN_IF_ERROR(kernels::Copy(host_batch_.inputs, device_batch_.inputs));
  return kernels::Copy(host_batch_.targets, device_batch_.targets);
}

Status Trainer::CheckLoss(float loss) const {
  if (std::isfinite(loss)) return OkStatus();
  return AbortedError("loss is " + std::string(std::isnan(loss) ? "NaN" : "Inf") + " at step " +
                      std::to_string(step_ + 1) +
                      "; stopped without saving (last checkpoint: step " +
                      std::to_string(last_saved_step_) +
                      "). Lower optimizer.lr, set optimizer.grad_clip, or check the data");
}

// Data parallel without a gradient hook: reduce and update overlapped, bucket by bucket.
// Otherwise: all gradients reduced, then the hook, clipping and the update.
StatusOr<float> Trainer::ReduceClipAndUpdate(float lr) {
  float grad_norm = 0;
  if (dp_ && !reduce_) {
    GANTRY_ASSIGN_OR_RETURN(grad_norm, dp_->ReduceAndUpdate(optimizer_.get(), step_, lr));
  } else {
    if (dp_) GANTRY_RETURN_IF_ERROR(dp_->ReduceGradients());
    if (reduce_) GANTRY_RETURN_IF_ERROR(reduce_(*model_));
    GANTRY_ASSIGN_OR_RETURN(grad_norm, dp_ ? dp_->ClipGradients(optimizer_.get())
                                           : optimizer_->ClipGradients());
  }
  if (!std::isfinite(grad_norm)) {
    return AbortedError("gradient norm is not finite at step " + std::to_string(step_ + 1) +
                        "; stopped without saving. Lower optimizer.lr or set grad_clip");
  }
  if (dp_ && !reduce_) return grad_norm;  // already updated
  GANTRY_RETURN_IF_ERROR(dp_ ? dp_->Update(optimizer_.get(), step_, lr)
                             : optimizer_->Step(step_, lr));
  return grad_norm;
}

Status Trainer::TrainStep(StepMetrics* m) {
  const auto t0 = Clock::now();
  const float lr = float(ScheduledLearningRate(spec_.optimizer, step_, total_steps_));
  GANTRY_RETURN_IF_ERROR(LoadBatch());
  const auto t1 = Clock::now();
  kernels::NewMatmulWeightsEpoch();  // parameters changed since the last step's products
  GANTRY_RETURN_IF_ERROR(model_->Forward(device_batch_));
  GANTRY_ASSIGN_OR_RETURN(float loss, model_->Loss());
  GANTRY_RETURN_IF_ERROR(CheckLoss(loss));
  // One process, no clipping, CPU: the optimizer updates each range of parameters inside
  // backward as soon as its gradients are final (GANTRY_FUSED_UPDATE=0 turns it off).
  const bool fused = !dp_ && !reduce_ && spec_.optimizer.grad_clip <= 0 &&
                     !model_->device().is_cuda() && TunableBool("FUSED_UPDATE", true);
  if (fused) GANTRY_RETURN_IF_ERROR(optimizer_->BeginStepInBackward(step_, lr));
  if (dp_) dp_->BeginBackward(reduce_ ? nullptr : optimizer_.get(), step_, lr);
  if (Status st = model_->Backward(device_batch_, dp_ ? dp_->loss_scale() : 1.0f); !st.ok()) {
    if (fused) optimizer_->CancelStepInBackward();
    return st;
  }
  double comm_wait = 0;
  float grad_norm = 0;
  if (fused) {
    GANTRY_ASSIGN_OR_RETURN(grad_norm, optimizer_->EndStepInBackward());
    if (!std::isfinite(grad_norm)) {
      return AbortedError("gradient norm is not finite at step " + std::to_string(step_ + 1) +
                          "; stopped without saving. Lower optimizer.lr or set grad_clip");
    }
  } else {
    GANTRY_ASSIGN_OR_RETURN(grad_norm, ReduceClipAndUpdate(lr));
  }
  if (dp_) comm_wait = dp_->last_comm_wait();
  ++step_;
  const double total = std::chrono::duration<double>(Clock::now() - t1).count();
  const StepTimes times{std::max(0.0, total - comm_wait),
                        std::chrono::duration<double>(t1 - t0).count(), comm_wait};
  *m = StepMetrics{step_, loss, lr, grad_norm, times};
  if (dp_) {
    GANTRY_RETURN_IF_ERROR(dp_->RecordStep(step_, times));
    GANTRY_RETURN_IF_ERROR(dp_->CheckParameters(step_));
  }
  if (on_step_) on_step_(*m);
  return OkStatus();
}

void Trainer::LogStep(const StepMetrics& m, double seconds, int64_t steps, const StepTimes& sum,
                      Progress* bar) {
  // Job-wide rate: every rank trains on its own batch in the same time.
  const double items = double(model_->ItemsPerBatch()) * double(opts_.world) * double(steps) /
                       std::max(seconds, 1e-9);
  const double n = double(std::max<int64_t>(1, steps));
  const char* rate_name = spec_.model.type == "gpt" ? "tokens_per_s" : "samples_per_s";
  if (bar != nullptr) bar->SetField(spec_.model.type == "gpt" ? "tok/s" : "samples/s", items);
  PublishStepMetrics(m, items, seconds / n);
  const LogLevel level =
      bar != nullptr && bar->mode() == ProgressMode::kBar ? LogLevel::kDebug : LogLevel::kInfo;
  if (!LogEnabled(level)) return;
  LogLine line(level, "train step", __FILE__, __LINE__);
  line.Field("step", m.step)
      .Field("steps", total_steps_)
      .Field("loss", m.loss)
      .Field("lr", m.lr)
      .Field("grad_norm", m.grad_norm)
      .Field(rate_name, items)
      .Field("step_s", seconds / n);
  if (dp_) {
    line.Field("world", int64_t(opts_.world))
        .Field("compute_s", sum.compute / n)
        .Field("data_wait_s", sum.data_wait / n)
        .Field("comm_wait_s", sum.comm_wait / n);
  }
}

void Trainer::RegisterMetrics() {
  MetricsRegistry& r = MetricsRegistry::Default();
  const MetricLabels labels = {{"job", spec_.name}, {"rank", std::to_string(opts_.rank)}};
  MetricLabels rate = labels;
  rate.emplace_back("unit", spec_.model.type == "gpt" ? "tokens" : "samples");
  metrics_.step = &r.GetGauge("gantry_train_step", "Last completed training step", labels);
  metrics_.steps = &r.GetGauge("gantry_train_steps", "Total steps of the run", labels);
  metrics_.loss = &r.GetGauge("gantry_train_loss", "Training loss at the last logged step", labels);
  metrics_.lr =
      &r.GetGauge("gantry_train_learning_rate", "Learning rate at the last logged step", labels);
  metrics_.grad_norm = &r.GetGauge(
      "gantry_train_grad_norm", "Global gradient norm at the last logged step (0: not computed)",
      labels);
  metrics_.throughput = &r.GetGauge("gantry_train_throughput",
                                    "Job-wide items per second over the last log window", rate);
  metrics_.step_seconds = &r.GetGauge("gantry_train_step_seconds",
                                      "Mean seconds per step over the last log window", labels);
  metrics_.checkpoints = &r.GetCounter("gantry_train_checkpoints_total",
                                       "Checkpoints saved by this process", {{"job", spec_.name}});
}

void Trainer::PublishStepMetrics(const StepMetrics& m, double items_per_s, double step_s) const {
  metrics_.step->Set(double(m.step));
  metrics_.steps->Set(double(total_steps_));
  metrics_.loss->Set(m.loss);
  metrics_.lr->Set(m.lr);
  metrics_.grad_norm->Set(m.grad_norm);
  metrics_.throughput->Set(items_per_s);
  metrics_.step_seconds->Set(step_s);
}

Status Trainer::CheckNothingToResume() {
  GANTRY_ASSIGN_OR_RETURN(std::vector<std::string> existing, checkpointer_->ListCommitted());
  if (existing.empty()) return OkStatus();
  return FailedPreconditionError("--no-resume but " + checkpoint_uri_ +
                                 " already holds checkpoints (newest " + existing.back() +
                                 "); refusing to overwrite them: use --resume, another "
                                 "--checkpoint-dir, or remove the directory");
}

Status Trainer::Run() {
  bool resumed = false;
  if (opts_.resume) {
    GANTRY_ASSIGN_OR_RETURN(resumed, Restore());
    if (!resumed) {
      GANTRY_LOG(INFO, "no checkpoint; starting from scratch").Field("uri", checkpoint_uri_);
    }
  } else {
    GANTRY_RETURN_IF_ERROR(AgreeWithRank0(opts_.rank == 0 ? CheckNothingToResume() : OkStatus()));
  }
  if (dp_) {
    // Every rank starts from rank 0's parameters (a restore broadcast them already).
    if (!resumed) GANTRY_RETURN_IF_ERROR(dp_->BroadcastFromRank0({}));
    GANTRY_RETURN_IF_ERROR(dp_->CheckParameters(step_, /*force=*/true));
  }
  const int64_t end =
      opts_.stop_after >= 0 ? std::min(opts_.stop_after, total_steps_) : total_steps_;
  const int64_t log_every = std::max<int64_t>(1, spec_.train.log_every);
  const int64_t ckpt_every = spec_.train.checkpoint_every;
  std::unique_ptr<Progress> bar;
  if (opts_.progress != ProgressMode::kOff) {
    bar = std::make_unique<Progress>(ProgressOptions{
        .label = "train", .total = total_steps_, .unit = "steps", .mode = opts_.progress});
    bar->Update(step_);
  }
  auto window_start = Clock::now();
  int64_t window_steps = 0;
  StepTimes window_times;
  StepMetrics m;
  int64_t steps_run = 0;
  while (step_ < end) {
    GANTRY_RETURN_IF_ERROR(TrainStep(&m));
    ++steps_run;
    ++window_steps;
    window_times.compute += m.times.compute;
    window_times.data_wait += m.times.data_wait;
    window_times.comm_wait += m.times.comm_wait;
    if (bar) {
      bar->SetField("loss", m.loss);
      bar->Update(step_);
    }
    if (step_ % log_every == 0 || step_ == end) {
      const double secs = std::chrono::duration<double>(Clock::now() - window_start).count();
      LogStep(m, secs, window_steps, window_times, bar.get());
      window_start = Clock::now();
      window_steps = 0;
      window_times = StepTimes{};
    }
    if (ckpt_every > 0 && step_ % ckpt_every == 0) GANTRY_RETURN_IF_ERROR(SaveCheckpoint());
  }
  if (bar) bar->Finish();
  if (last_saved_step_ != step_) GANTRY_RETURN_IF_ERROR(SaveCheckpoint());
  if (steps_run == 0) {
    // Resumed at (or past) the last step: no step ran, so there is no loss to report (it
    // used to log "loss":0).
    GANTRY_LOG(INFO, "train done: the checkpoint is already at the last step")
        .Field("step", step_)
        .Field("steps", total_steps_);
  } else {
    GANTRY_LOG(INFO, "train done").Field("step", step_).Field("loss", m.loss);
  }
  return OkStatus();
}

}  // namespace gantry::train
