// Trainer: build from the JobSpec, restore, and the step loop.
#include "train/trainer.h"

#include <cmath>

#include "base/logging.h"
#include "kernels/runtime.h"

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

Status Trainer::Build() {
  if (spec_.kind != JobKind::kTrain) {
    return InvalidArgumentError(spec_.source + ": kind is " + JobKindName(spec_.kind) +
                                ", `gantry train` needs kind: train");
  }
  TrainSpec& ts = spec_.train;
  if (opts_.steps >= 0) ts.steps = opts_.steps;
  if (!opts_.device.empty()) ts.device = opts_.device;
  if (opts_.threads >= 0) ts.threads = opts_.threads;
  if (!opts_.checkpoint_dir.empty()) ts.checkpoint_uri = opts_.checkpoint_dir;
  if (ts.checkpoint_uri.empty()) ts.checkpoint_uri = ".gantry/ckpt/" + spec_.name;
  checkpoint_uri_ = ts.checkpoint_uri;
  total_steps_ = ts.steps;
  if (ts.threads > 0) kernels::SetNumThreads(ts.threads);
  GANTRY_ASSIGN_OR_RETURN(kernels::Device device, kernels::ParseDevice(ts.device));
  if (device.is_cuda() && device.index >= kernels::CudaDeviceCount()) {
    return FailedPreconditionError(
        "train.device " + ts.device + " is not available (" +
        std::to_string(kernels::CudaDeviceCount()) + " CUDA devices, built with CUDA: " +
        (kernels::BuiltWithCuda() ? "yes" : "no") + "); use --device cpu");
  }
  SetLogContext("job", spec_.name);
  SetLogContext("rank", int64_t(opts_.rank));
  const int batch = spec_.data.batch_per_rank;
  GANTRY_ASSIGN_OR_RETURN(model_, Model::Create(spec_.model, batch, device));
  GANTRY_ASSIGN_OR_RETURN(optimizer_, Optimizer::Create(spec_.optimizer, *model_));
  DataOptions dopts{batch, spec_.data.seed, opts_.rank, opts_.world};
  GANTRY_ASSIGN_OR_RETURN(data_, OpenDataSource(spec_.data, spec_.model, dopts));
  GANTRY_ASSIGN_OR_RETURN(BatchLayout layout, BatchLayoutFor(spec_.model, batch));
  GANTRY_ASSIGN_OR_RETURN(host_batch_, AllocateBatch(layout, kernels::Device::Cpu()));
  device_batch_ = host_batch_;
  if (!device.is_cpu()) {
    GANTRY_ASSIGN_OR_RETURN(device_batch_, AllocateBatch(layout, device));
  }
  GANTRY_ASSIGN_OR_RETURN(checkpointer_, Checkpointer::Open(checkpoint_uri_, ts.keep_last));
  rng_.Seed(MixSeed(spec_.data.seed, kTrainerRngSalt));
  return model_->InitParams(spec_.data.seed);
}

std::vector<NamedTensor> Trainer::CheckpointTensors() {
  std::vector<NamedTensor> out;
  for (const ParamInfo& p : model_->params()) out.push_back({p.name, model_->Param(p)});
  for (const auto& [state_name, flat] : optimizer_->state()) {
    for (const ParamInfo& p : model_->params()) {
      out.push_back({"optimizer." + state_name + "." + p.name, flat.View(p.offset, p.shape)});
    }
  }
  return out;
}

StatusOr<bool> Trainer::Restore() {
  StatusOr<LoadedCheckpoint> ck = checkpointer_->ReadNewestValid();
  if (!ck.ok()) {
    if (ck.status().code() == StatusCode::kNotFound) return false;
    return ck.status();
  }
  const CheckpointMeta& meta = ck->meta;
  if (!(meta.model == model_->spec()) || meta.optimizer.type != spec_.optimizer.type) {
    return FailedPreconditionError(
        "checkpoint " + checkpoint_uri_ + "/" + ck->name + " was written for model " +
        meta.model.type + " with optimizer " + meta.optimizer.type +
        " and a different configuration; use another --checkpoint-dir or remove it");
  }
  GANTRY_RETURN_IF_ERROR(ck->Restore(CheckpointTensors()));
  GANTRY_RETURN_IF_ERROR(data_->Restore(meta.data));
  rng_.set_state(meta.rng);
  step_ = meta.step;
  last_saved_step_ = step_;
  GANTRY_LOG(INFO, "resumed from checkpoint")
      .Field("checkpoint", checkpoint_uri_ + "/" + ck->name)
      .Field("step", step_)
      .Field("epoch", meta.data.epoch);
  return true;
}

Status Trainer::SaveCheckpoint() {
  // Ranks step in lockstep with identical parameters, optimizer state, data position and RNG,
  // so rank 0's checkpoint is everyone's.
  if (opts_.rank != 0) {
    last_saved_step_ = step_;
    return OkStatus();
  }
  CheckpointMeta meta;
  meta.step = step_;
  meta.data = data_->position();
  meta.rng = rng_.state();
  meta.model = model_->spec();
  meta.optimizer = spec_.optimizer;
  meta.tokenizer = data_->tokenizer();
  meta.job = spec_.name;
  GANTRY_RETURN_IF_ERROR(checkpointer_->Save(meta, CheckpointTensors()));
  last_saved_step_ = step_;
  GANTRY_LOG(INFO, "checkpoint saved")
      .Field("checkpoint", checkpoint_uri_ + "/" + CheckpointName(step_))
      .Field("step", step_);
  return OkStatus();
}

Status Trainer::LoadBatch() {
  GANTRY_RETURN_IF_ERROR(data_->Next(host_batch_));
  if (device_batch_.inputs.raw() == host_batch_.inputs.raw()) return OkStatus();
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

Status Trainer::TrainStep(StepMetrics* m) {
  const float lr = float(ScheduledLearningRate(spec_.optimizer, step_, total_steps_));
  GANTRY_RETURN_IF_ERROR(LoadBatch());
  GANTRY_RETURN_IF_ERROR(model_->Forward(device_batch_));
  GANTRY_ASSIGN_OR_RETURN(float loss, model_->Loss());
  GANTRY_RETURN_IF_ERROR(CheckLoss(loss));
  GANTRY_RETURN_IF_ERROR(model_->Backward(device_batch_));
  if (reduce_) GANTRY_RETURN_IF_ERROR(reduce_(*model_));
  GANTRY_ASSIGN_OR_RETURN(float grad_norm, optimizer_->ClipGradients());
  if (!std::isfinite(grad_norm)) {
    return AbortedError("gradient norm is not finite at step " + std::to_string(step_ + 1) +
                        "; stopped without saving. Lower optimizer.lr or set grad_clip");
  }
  GANTRY_RETURN_IF_ERROR(optimizer_->Step(step_, lr));
  ++step_;
  *m = StepMetrics{step_, loss, lr, grad_norm};
  if (on_step_) on_step_(*m);
  return OkStatus();
}

void Trainer::LogStep(const StepMetrics& m, double seconds, int64_t steps, Progress* bar) {
  const double items = double(model_->ItemsPerBatch()) * double(steps) / std::max(seconds, 1e-9);
  const char* rate_name = spec_.model.type == "gpt" ? "tokens_per_s" : "samples_per_s";
  if (bar != nullptr) bar->SetField(spec_.model.type == "gpt" ? "tok/s" : "samples/s", items);
  const LogLevel level =
      bar != nullptr && bar->mode() == ProgressMode::kBar ? LogLevel::kDebug : LogLevel::kInfo;
  if (!LogEnabled(level)) return;
  LogLine(level, "train step", __FILE__, __LINE__)
      .Field("step", m.step)
      .Field("steps", total_steps_)
      .Field("loss", m.loss)
      .Field("lr", m.lr)
      .Field("grad_norm", m.grad_norm)
      .Field(rate_name, items);
}

Status Trainer::Run() {
  if (opts_.resume) {
    GANTRY_ASSIGN_OR_RETURN(bool resumed, Restore());
    if (!resumed) {
      GANTRY_LOG(INFO, "no checkpoint; starting from scratch").Field("uri", checkpoint_uri_);
    }
  } else {
    GANTRY_ASSIGN_OR_RETURN(std::vector<std::string> existing, checkpointer_->ListCommitted());
    if (!existing.empty()) {
      return FailedPreconditionError("--no-resume but " + checkpoint_uri_ +
                                     " already holds checkpoints (newest " + existing.back() +
                                     "); refusing to overwrite them: use --resume, another "
                                     "--checkpoint-dir, or remove the directory");
    }
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
  StepMetrics m;
  while (step_ < end) {
    GANTRY_RETURN_IF_ERROR(TrainStep(&m));
    ++window_steps;
    if (bar) {
      bar->SetField("loss", m.loss);
      bar->Update(step_);
    }
    if (step_ % log_every == 0 || step_ == end) {
      const double secs = std::chrono::duration<double>(Clock::now() - window_start).count();
      LogStep(m, secs, window_steps, bar.get());
      window_start = Clock::now();
      window_steps = 0;
    }
    if (ckpt_every > 0 && step_ % ckpt_every == 0) GANTRY_RETURN_IF_ERROR(SaveCheckpoint());
  }
  if (bar) bar->Finish();
  if (last_saved_step_ != step_) GANTRY_RETURN_IF_ERROR(SaveCheckpoint());
  GANTRY_LOG(INFO, "train done").Field("step", step_).Field("loss", m.loss);
  return OkStatus();
}

}  // namespace gantry::train
