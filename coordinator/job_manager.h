// JobManager: the job lifecycle. PENDING -> PLACED -> RUNNING -> SUCCEEDED | FAILED |
// CANCELLED, with RESTARTING when a rank fails or its worker is lost (the gang is stopped and
// placed again as attempt+1, up to restarts.max; then FAILED with the first error). Every
// transition is written to the JobStore with an event before messages go out. Talks to workers
// only through its outbox (LaunchRank / StopRanks envelopes addressed by worker id).
// Single-threaded: the coordinator loop calls every method.
#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "base/status.h"
#include "coordinator/clock.h"
#include "coordinator/job_store.h"
#include "coordinator/rendezvous.h"
#include "coordinator/scheduler/scheduler.h"
#include "coordinator/worker_registry.h"
#include "proto/gantry.pb.h"

namespace gantry::coordinator {

struct ManagerOptions {
  SchedulerOptions scheduling;                 // quotas, topology label
  std::chrono::milliseconds stop_grace{3000};  // SIGTERM -> SIGKILL at the worker
  // After a coordinator restart, ranks not reported by their worker within this are lost.
  std::chrono::milliseconds adopt_timeout{7000};
  std::string coordinator_endpoint;  // given to ranks (GANTRY_COORDINATOR)
  int port_base = 29500;             // MASTER_PORT range on the rank-0 host
  int port_count = 400;
};

struct Outgoing {
  std::string worker_id;
  proto::Envelope env;
};

// Counters for /metrics.
struct ManagerStats {
  std::map<std::string, int> jobs_by_state;
  std::vector<double> queue_wait_s;  // drained by the metrics exporter
  std::vector<double> placement_s;   // scheduler pass durations that placed something
  int64_t restarts = 0;
};

class JobManager {
 public:
  JobManager(JobStore* store, WorkerRegistry* registry, Rendezvous* kv, const Clock* clock,
             ManagerOptions options);
  ~JobManager();

  // Loads non-terminal jobs after a (re)start; running gangs wait for their workers.
  Status Recover();

  // `tenant`: from the user's token ("" = take the spec's resources.tenant).
  StatusOr<std::string> Submit(const proto::SubmitJob& req, const std::string& tenant);
  // `tenant` "" = any job (no tokens configured or an admin token).
  Status Cancel(const std::string& job_id, const std::string& tenant);
  StatusOr<proto::JobInfo> Info(const std::string& job_id, bool describe);
  StatusOr<proto::JobList> List(bool all, int limit);
  StatusOr<proto::LogBatch> Logs(const proto::GetLogs& req);

  void OnWorkerRegistered(const proto::RegisterWorker& reg);
  void OnRankStarted(const std::string& worker_id, const proto::RankStatus& rank);
  void OnRankExited(const std::string& worker_id, const proto::RankStatus& rank);
  void OnRankLogs(const proto::RankLogs& logs);
  void OnWorkerLost(const std::string& worker_id);
  // Reconciles the worker's view (the ranks it holds, in every heartbeat) with ours, which
  // lost messages can make disagree: a missing LaunchRank is resent (then, after
  // `lost_after_missed` resends, the attempt fails), a RankStarted that never came is taken
  // from the heartbeat, a rank we hold as running that the worker no longer has fails the
  // attempt, and ranks of finished jobs or old attempts, or of a gang being stopped, are told
  // to stop (again).
  void OnHeartbeat(const proto::Heartbeat& hb);

  // Timers (stop timeouts, re-adoption deadlines) and a scheduling pass when anything changed.
  void Tick();
  bool ValidToken(const std::string& job_id, int attempt, const std::string& token) const;

  std::vector<Outgoing> TakeOutbox();
  std::vector<RoutedReply> TakeKvReplies();
  ManagerStats& stats() { return stats_; }

 private:
  struct Job;
  Job* FindJob(const std::string& id);
  void Transition(Job& job, JobState state, const std::string& reason);
  void RunScheduler();
  void Launch(Job& job, const GangPlacement& placement, const std::vector<std::string>& hosts);
  void FailAttempt(Job& job, const std::string& reason);
  void StopGang(Job& job);
  // StopRanks of the job's current attempt to one worker.
  void SendStop(const Job& job, const std::string& worker_id);
  void SendStop(const std::string& job_id, int attempt, const std::string& worker_id);
  // `release`: give the rank's slots back to its worker (false when the worker re-registered
  // without it: a registration starts from no allocations).
  void RankDone(Job& job, int rank, const std::string& state, int exit_code, bool release = true);
  void MaybeFinishAttempt(Job& job);
  void SaveJob(const Job& job);
  void SaveRank(const Job& job, int rank);
  void UpdateProgress(Job& job, const std::string& line);
  proto::JobInfo ToInfo(const Job& job) const;

  JobStore* store_;
  WorkerRegistry* registry_;
  Rendezvous* kv_;
  const Clock* clock_;
  ManagerOptions options_;
  std::map<std::string, std::unique_ptr<Job>> jobs_;  // active (non-terminal or draining)
  std::vector<Outgoing> outbox_;
  std::vector<RoutedReply> kv_replies_;
  bool dirty_ = true;  // something changed since the last scheduling pass
  Reservation reservation_;
  std::vector<std::string> last_host_ids_;  // host index -> worker id of the last pass
  ManagerStats stats_;
};

}  // namespace gantry::coordinator
