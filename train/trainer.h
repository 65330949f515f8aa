// Trainer: the training loop behind `gantry train`, for one process or one rank of a
// data-parallel job (TrainerOptions::comm; see train/data_parallel.h). Builds model, optimizer
// and data from a JobSpec, resumes from the newest valid checkpoint (bitwise: parameters,
// optimizer state, data position and RNG are all restored; with several ranks rank 0 reads it
// and broadcasts it), and runs named steps:
// LoadBatch -> Forward -> CheckLoss -> Backward -> ReduceGradients -> ClipGradients -> Update,
// logging JSON lines every log_every steps and checkpointing every checkpoint_every steps and
// at the end (rank 0 writes). A NaN/Inf loss stops the run with an error naming the step.
// Not thread-safe; one Trainer per thread (it sets the process-wide log context).
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include "base/job_spec.h"
#include "base/metrics.h"
#include "base/progress.h"
#include "base/status.h"
#include "comm/communicator.h"
#include "train/checkpoint.h"
#include "train/data_parallel.h"
#include "train/data.h"
#include "train/model.h"
#include "train/optimizer.h"
#include "train/rng.h"

namespace gantry::train {

struct TrainerOptions {
  bool resume = true;          // continue from the newest valid checkpoint if there is one
  int64_t steps = -1;          // overrides train.steps (and so the LR schedule) when >= 0
  std::string checkpoint_dir;  // overrides train.checkpoint_uri when set
  std::string device;          // overrides train.device when set ("cpu", "cuda:0")
  int threads = -1;            // overrides train.threads when >= 0 (0 = automatic)
  // Stop after this step (>= 0) with a checkpoint, as if interrupted; the schedule still runs
  // to `steps`, so a later resume continues exactly as an uninterrupted run would.
  int64_t stop_after = -1;
  // Progress bar on stderr (the CLI picks kBar on a TTY). While a bar is drawn the per-step
  // JSON lines go out at debug level so they do not tear the bar; events stay at info.
  ProgressMode progress = ProgressMode::kOff;
  int rank = 0;  // data sharding and log context (single process: 0 of 1)
  int world = 1;
  // Data parallel: this rank's communicator (rank and world are taken from it). Borrowed; it
  // must outlive the Trainer and nobody else may issue calls on it meanwhile. With size 1 it
  // is unused. Only rank 0 writes checkpoints and draws the progress bar.
  comm::Communicator* comm = nullptr;
};

// What one training step measured; `step` counts completed updates (1 after the first).
struct StepMetrics {
  int64_t step = 0;
  float loss = 0;
  float lr = 0;
  float grad_norm = 0;
  StepTimes times;  // seconds: compute, data wait, exposed communication
};

class Trainer {
 public:
  // Validates and builds everything (allocations happen here); no training yet.
  static StatusOr<std::unique_ptr<Trainer>> Create(const JobSpec& spec,
                                                   const TrainerOptions& options);
  // Unregisters its parameters from the bf16 weight cache (kernels::SetMatmulWeights).
  ~Trainer();

  // Restore() (or fresh init) then the loop until `steps` (or stop_after), then the final
  // checkpoint. Errors: kDataLoss when every checkpoint is corrupt, kFailedPrecondition for
  // --no-resume over existing checkpoints or a checkpoint of another model, kInternal-free
  // numerical stop: kAborted "loss is NaN at step N".
  Status Run();

  // Building blocks (Run uses them; tests and benchmarks may too).
  // Loads the newest valid checkpoint into the trainer; false when there is none.
  StatusOr<bool> Restore();
  // One full step; fills `metrics`.
  Status TrainStep(StepMetrics* metrics);
  // Rank 0 writes; other ranks only note the step (they restore from rank 0's checkpoints).
  Status SaveCheckpoint();

  // Called after every step (e.g. tests record the loss sequence).
  void SetStepCallback(std::function<void(const StepMetrics&)> fn) { on_step_ = std::move(fn); }
  // Data-parallel hook: runs between Backward and ClipGradients (sum/average the gradients).
  void SetGradientReducer(std::function<Status(Model&)> fn) { reduce_ = std::move(fn); }

  Model& model() { return *model_; }
  // nullptr with comm.zero1 on several ranks (then data_parallel()->sharded() updates).
  Optimizer* optimizer() { return optimizer_.get(); }
  DataParallel* data_parallel() { return dp_.get(); }
  DataSource& data() { return *data_; }
  int64_t step() const { return step_; }
  int64_t total_steps() const { return total_steps_; }
  const std::string& checkpoint_uri() const { return checkpoint_uri_; }

 private:
  Trainer() = default;
  Status Build();
  void SplitThreadsAmongLocalRanks();
  // Whether the data source gets a prefetch thread (GANTRY_DATA_PREFETCH, default auto).
  static bool PrefetchData();
  // A CPU of this rank's share is left after its compute threads (for a prefetch or
  // communication thread to run without taking turns with compute).
  static bool SpareCpu();
  // Parameters then optimizer state (full-size: with ZeRO-1 the gathered state).
  StatusOr<std::vector<NamedTensor>> CheckpointTensors();
  std::vector<kernels::Tensor> FullStateTensors();
  StatusOr<bool> RestoreDistributed();
  Status CheckCompatible(const LoadedCheckpoint& ck) const;
  Status ApplyMeta(const CheckpointMeta& meta, const std::string& name);
  Status CheckNothingToResume();
  // Several ranks: rank 0's status on every rank (so all stop together with its reason).
  Status AgreeWithRank0(Status status);
  // Loop steps.
  Status LoadBatch();
  Status CheckLoss(float loss) const;
  // Reduce (data parallel), clip and update; returns the gradient norm.
  StatusOr<float> ReduceClipAndUpdate(float lr);
  // This trainer's series in MetricsRegistry::Default() (`gantry train --metrics-port` serves
  // them), registered once by Build (metrics.h: registering takes a lock; keep the reference).
  void RegisterMetrics();
  // Sets the gauges of the last logged step: step, loss, lr, grad norm, job-wide rate,
  // seconds per step.
  void PublishStepMetrics(const StepMetrics& m, double items_per_s, double step_s) const;
  void LogStep(const StepMetrics& m, double seconds, int64_t steps, const StepTimes& sum,
               Progress* bar);

  JobSpec spec_;
  TrainerOptions opts_;
  std::unique_ptr<Model> model_;
  std::unique_ptr<Optimizer> optimizer_;
  std::unique_ptr<DataSource> data_;
  std::unique_ptr<Checkpointer> checkpointer_;  // rank 0 only
  std::unique_ptr<DataParallel> dp_;
  Batch host_batch_, device_batch_;  // device_batch_ aliases host_batch_ on cpu
  Rng rng_;
  int64_t step_ = 0;
  int64_t total_steps_ = 0;
  int64_t last_saved_step_ = -1;
  std::string checkpoint_uri_;
  std::function<void(const StepMetrics&)> on_step_;
  std::function<Status(Model&)> reduce_;
  struct MetricSeries {
    Gauge* step = nullptr;
    Gauge* steps = nullptr;
    Gauge* loss = nullptr;
    Gauge* lr = nullptr;
    Gauge* grad_norm = nullptr;
    Gauge* throughput = nullptr;
    Gauge* step_seconds = nullptr;
    Counter* checkpoints = nullptr;
  } metrics_;
};

}  // namespace gantry::train
