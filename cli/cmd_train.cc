// `gantry train JOB.yaml` (one process, or one rank of a data-parallel job launched by the
// coordinator, by mpirun or from torchrun-style RANK/WORLD_SIZE/MASTER_ADDR/MASTER_PORT; see
// train/launch.h; resumes from the newest checkpoint by default) and
// `gantry sample CHECKPOINT` (greedy text from a byte-level gpt checkpoint).
#include <unistd.h>

#include <algorithm>
#include <iostream>
#include <memory>
#include <string>

#include "base/http_server.h"
#include "base/job_spec.h"
#include "base/logging.h"
#include "base/metrics.h"
#include "base/tunables.h"
#include "cli/command.h"
#include "comm/bootstrap/mpi_bootstrap.h"
#include "coordinator/coordinator_store.h"
#include "train/cpu_binding.h"
#include "train/launch.h"
#include "train/sample.h"
#include "train/trainer.h"

namespace gantry::cli {
namespace {

struct TrainArgs {
  std::string job;
  bool resume = false;  // the default anyway; the flag exists for explicit scripts
  bool no_resume = false;
  int64_t steps = -1;
  int64_t stop_after = -1;
  std::string checkpoint_dir;
  std::string device;
  int threads = -1;
  std::string progress = "auto";
  std::string comm_backend;
  int metrics_port = -1;
  std::string metrics_host;
};

// The rank's Prometheus endpoint (step, loss, throughput, straggler report, ...): port + the
// local rank, so the ranks of one host do not collide; port 0 picks a free one. Null: off.
StatusOr<std::unique_ptr<HttpServer>> StartMetrics(const TrainArgs& a) {
  if (a.metrics_port < 0) return std::unique_ptr<HttpServer>();
  const int port =
      a.metrics_port == 0 ? 0 : a.metrics_port + std::max(0, train::LocalRankFromEnv());
  auto http = StartMetricsServer(a.metrics_host, port, MetricsRegistry::Default());
  if (!http.ok()) {
    const Status& s = http.status();
    return Status(s.code(), "--metrics-port " + std::to_string(a.metrics_port) + ": " + s.message());
  }
  GANTRY_LOG(INFO, "metrics endpoint").Field("host", a.metrics_host).Field("port", (*http)->port());
  return http;
}

int RunTrain(const TrainArgs& a) {
  // Under mpirun a failed rank leaves without MPI_Finalize (which would wait for peers that are
  // waiting for it), so mpirun ends the whole job now instead of at the comm timeout.
  auto fail = [](const Status& s) {
    comm::MarkMpiFailed();
    return ReportError(s);
  };
  StatusOr<JobSpec> spec = ParseJobSpecFile(a.job);
  if (!spec.ok()) return fail(spec.status());
  // Before any thread exists (communicator, kernel pool): they inherit the rank's CPU set.
  if (StatusOr<train::CpuBindingPlan> bound = train::BindLocalRank(); !bound.ok()) {
    return fail(bound.status());
  }
  StatusOr<std::unique_ptr<HttpServer>> metrics = StartMetrics(a);
  if (!metrics.ok()) return fail(metrics.status());
  train::TrainerOptions o;
  o.resume = !a.no_resume;
  o.steps = a.steps;
  o.stop_after = a.stop_after;
  o.checkpoint_dir = a.checkpoint_dir;
  o.device = a.device;
  o.threads = a.threads;
  if (a.progress == "bar" || (a.progress == "auto" && ::isatty(2))) o.progress = ProgressMode::kBar;
  if (a.progress == "json") o.progress = ProgressMode::kJson;
  train::LaunchOptions lo;
  lo.backend = a.comm_backend;
  lo.cuda = (a.device.empty() ? spec->train.device : a.device).rfind("cuda", 0) == 0;
  lo.coordinator = [] { return coordinator::BootstrapFromCoordinator(); };
  StatusOr<train::Launch> launch = train::ConnectRanks(*spec, lo);
  if (!launch.ok()) return fail(launch.status());
  o.comm = launch->session.comm.get();
  auto trainer = train::Trainer::Create(*spec, o);
  if (!trainer.ok()) {
    if (o.comm != nullptr) o.comm->Abort(trainer.status());  // peers stop now, not at a timeout
    return fail(trainer.status());
  }
  const Status run = (*trainer)->Run();
  if (!run.ok() && o.comm != nullptr) o.comm->Abort(run);  // peers fail now, not at a timeout
  return run.ok() ? kExitOk : fail(run);
}

CommandRegistration kTrain(
    "train",
    "Train a model from a job YAML: one process, or one rank of a job launched by the "
    "coordinator, mpirun or RANK/WORLD_SIZE/MASTER_ADDR/MASTER_PORT (resumes from checkpoints)",
    [](CLI::App& app) -> CommandHandler {
      auto a = std::make_shared<TrainArgs>();
      app.add_option("job", a->job, "job spec YAML (kind: train)")->required();
      auto* resume =
          app.add_flag("--resume", a->resume, "resume from the newest valid checkpoint (default)");
      app.add_flag("--no-resume", a->no_resume,
                   "start from scratch; refuses if the checkpoint dir already has checkpoints")
          ->excludes(resume);
      app.add_option("--steps", a->steps, "total steps (overrides train.steps and the schedule)")
          ->check(CLI::Range(int64_t{0}, int64_t{1} << 40));
      app.add_option("--stop-after", a->stop_after,
                     "stop with a checkpoint after this step, as if interrupted (resume later)")
          ->check(CLI::Range(int64_t{0}, int64_t{1} << 40));
      app.add_option(
          "--checkpoint-dir", a->checkpoint_dir,
          "checkpoint location (dir, file:// or ceph://); overrides train.checkpoint_uri");
      app.add_option("--device", a->device, "cpu | cuda | cuda:N (overrides train.device)");
      app.add_option("--threads", a->threads, "CPU threads (overrides train.threads; 0 = auto)")
          ->check(CLI::Range(0, 4096));
      app.add_option("--progress", a->progress, "auto | bar | json | off (auto: bar on a TTY)")
          ->check(CLI::IsMember({"auto", "bar", "json", "off"}));
      app.add_option("--comm-backend", a->comm_backend,
                     "auto | tcp | shm | mpi | nccl (overrides comm.backend)")
          ->check(CLI::IsMember({"auto", "tcp", "shm", "mpi", "nccl"}));
      a->metrics_port = static_cast<int>(TunableInt("METRICS_PORT", -1));
      a->metrics_host = TunableString("METRICS_HOST", "127.0.0.1");
      app.add_option("--metrics-port", a->metrics_port,
                     "serve Prometheus /metrics on this port + LOCAL_RANK (0: any free port, "
                     "logged; -1: off; default GANTRY_METRICS_PORT)")
          ->check(CLI::Range(-1, 65535));
      app.add_option("--metrics-host", a->metrics_host,
                     "address for /metrics (default GANTRY_METRICS_HOST or 127.0.0.1)");
      return [a]() { return RunTrain(*a); };
    });

CommandRegistration kSample(
    "sample", "Greedy text from a byte-level gpt checkpoint", [](CLI::App& app) -> CommandHandler {
      auto path = std::make_shared<std::string>();
      auto o = std::make_shared<train::SampleOptions>();
      app.add_option("checkpoint", *path, "checkpoint dir (ckpt-NNNNNN) or checkpoint root")
          ->required();
      app.add_option("--prompt", o->prompt, "text to continue (default: a newline)");
      app.add_option("--tokens", o->tokens, "bytes to generate (default 200)")
          ->check(CLI::Range(0, 1 << 24));
      app.add_option("--threads", o->threads, "CPU threads (0 = auto)")->check(CLI::Range(0, 4096));
      return [path, o]() {
        StatusOr<std::string> text = train::SampleGreedy(*path, *o);
        if (!text.ok()) return ReportError(text.status());
        std::cout << o->prompt << *text << std::endl;
        return kExitOk;
      };
    });

}  // namespace
}  // namespace gantry::cli
