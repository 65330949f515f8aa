// JobManager: rank and worker events, gang failure and restart, cancel, timers, and
// re-adoption of running gangs after a coordinator restart.
#include <nlohmann/json.hpp>
#include <set>

#include "base/job_spec.h"
#include "base/logging.h"
#include "coordinator/job_manager.h"
#include "coordinator/job_manager_internal.h"
#include "proto/wire.h"

namespace gantry::coordinator {

void FillCommand(const JobRecord& rec, proto::LaunchRank* l) {
  l->set_workdir(rec.workdir);
  auto spec = ParseJobSpec(rec.spec_yaml, rec.name);
  if (!spec.ok() || spec->kind != JobKind::kCommand) return;
  for (const auto& a : spec->command.argv) l->add_argv(a);
  for (const auto& [k, v] : spec->command.env) (*l->mutable_env())[k] = v;
  const std::string& wd = spec->command.workdir;
  if (!wd.empty()) {
    l->set_workdir(wd[0] == '/' || rec.workdir.empty() ? wd : rec.workdir + "/" + wd);
    l->set_workdir_required(true);
  }
}

Status JobManager::Recover() {
  GANTRY_ASSIGN_OR_RETURN(auto records, store_->LoadJobs(/*include_finished=*/false));
  const SteadyTime now = clock_->Now();
  for (const JobRecord& rec : records) {
    auto job = std::make_unique<Job>();
    job->rec = rec;
    job->submitted_at = now;
    job->progress.ParseFromString(rec.progress);
    if (rec.state != JobState::kPending) {
      GANTRY_ASSIGN_OR_RETURN(job->ranks, store_->LoadRanks(rec.id, rec.attempt));
      job->confirmed.assign(job->ranks.size(), false);
      job->adopting = true;
      job->adopt_deadline = now + options_.adopt_timeout;
      if (rec.state == JobState::kRestarting) {
        job->stopping = true;
        job->stop_deadline = job->adopt_deadline;
      }
    }
    GANTRY_LOG(INFO, "recovered job")
        .Field("job", rec.id)
        .Field("state", JobStateName(rec.state))
        .Field("attempt", rec.attempt);
    jobs_[rec.id] = std::move(job);
  }
  dirty_ = true;
  return OkStatus();
}

Status JobManager::Cancel(const std::string& job_id, const std::string& tenant) {
  Job* job = FindJob(job_id);
  if (!job || IsTerminal(job->rec.state)) {
    GANTRY_ASSIGN_OR_RETURN(JobRecord rec, store_->LoadJob(job_id));
    return FailedPreconditionError("job " + job_id + " already finished as " +
                                   JobStateName(rec.state) + "; nothing to cancel");
  }
  if (!tenant.empty() && job->rec.tenant != tenant)
    return PermissionDeniedError("job " + job_id + " belongs to tenant '" + job->rec.tenant +
                                 "'; your token is for tenant '" + tenant + "'");
  GANTRY_RETURN_IF_ERROR(store_->Begin());
  Transition(*job, JobState::kCancelled, "cancelled by user");
  StopGang(*job);
  GANTRY_RETURN_IF_ERROR(store_->Commit());
  MaybeFinishAttempt(*job);
  return OkStatus();
}

void JobManager::StopGang(Job& job) {
  if (job.stopping) return;
  job.stopping = true;
  job.stop_deadline = clock_->Now() + options_.stop_grace + std::chrono::seconds(3);
  std::set<std::string> workers;
  for (const RankRecord& r : job.ranks)
    if (!RankIsDone(r)) workers.insert(r.worker_id);
  for (const std::string& w : workers) SendStop(job, w);
}

void JobManager::SendStop(const Job& job, const std::string& worker_id) {
  SendStop(job.rec.id, job.rec.attempt, worker_id);
}

void JobManager::SendStop(const std::string& job_id, int attempt, const std::string& worker_id) {
  proto::Envelope env;
  env.set_version(wire::kProtocolVersion);
  env.mutable_stop_ranks()->set_job_id(job_id);
  env.mutable_stop_ranks()->set_attempt(attempt);
  env.mutable_stop_ranks()->set_grace_ms(static_cast<int>(options_.stop_grace.count()));
  outbox_.push_back({worker_id, std::move(env)});
}

void JobManager::RankDone(Job& job, int rank, const std::string& state, int exit_code,
                          bool release) {
  RankRecord& r = job.ranks[rank];
  if (RankIsDone(r)) return;
  r.state = state;
  r.exit_code = exit_code;
  if (release) registry_->Release(r.worker_id, r.gpu_indices, job.rec.cpus_per_rank);
  // Freed slots can place a queued job: schedule again even when no job changes state (a
  // cancelled or failed gang's ranks end after its transition; the job is then just erased).
  dirty_ = true;
  SaveRank(job, rank);
}

void JobManager::FailAttempt(Job& job, const std::string& reason) {
  if (job.stopping || IsTerminal(job.rec.state) || job.rec.state == JobState::kRestarting) return;
  job.rec.error = reason;
  if (job.rec.attempt < job.rec.max_restarts) {
    ++stats_.restarts;
    Transition(job, JobState::kRestarting,
               reason + "; restarting the gang as attempt " + std::to_string(job.rec.attempt + 2) +
                   " of " + std::to_string(job.rec.max_restarts + 1));
  } else {
    Transition(job, JobState::kFailed,
               reason + "; no restarts left (restarts.max = " +
                   std::to_string(job.rec.max_restarts) + ")");
  }
  StopGang(job);
}

void JobManager::MaybeFinishAttempt(Job& job) {
  if (!job.AllDone()) return;
  const JobRecord& r = job.rec;
  if (!job.ranks.empty()) {
    registry_->ReleasePort(job.ranks[0].worker_id, r.master_port);
    dirty_ = true;  // a freed port can place a queued job too
    kv_->Drop(Rendezvous::Scope(r.id, r.attempt), kv_replies_);
  }
  if (r.state == JobState::kRestarting) {
    job.rec.attempt++;
    job.rec.token.clear();
    job.ranks.clear();
    job.confirmed.clear();
    job.launches.clear();
    job.launch_sent.clear();
    job.launch_resends.clear();
    job.stopping = job.adopting = false;
    job.submitted_at = clock_->Now() - std::chrono::hours(1);  // it has waited already
    Transition(job, JobState::kPending,
               "gang stopped; queued again as attempt " + std::to_string(job.rec.attempt + 1));
    return;
  }
  if (r.state == JobState::kPlaced || r.state == JobState::kRunning) {
    job.rec.error.clear();  // earlier attempts' failures stay in the events
    Transition(job, JobState::kSucceeded,
               "all " + std::to_string(r.ranks) + " rank(s) exited with code 0");
  }
  if (IsTerminal(job.rec.state)) jobs_.erase(job.rec.id);  // drained: forget it
}

void JobManager::OnRankStarted(const std::string& worker_id, const proto::RankStatus& s) {
  Job* job = FindJob(s.job_id());
  if (!job || job->rec.attempt != s.attempt() || s.rank() < 0 ||
      s.rank() >= static_cast<int>(job->ranks.size()) || IsTerminal(job->rec.state)) {
    return;  // a stale attempt: its StopRanks is already on the way
  }
  RankRecord& r = job->ranks[s.rank()];
  if (RankIsDone(r)) return;
  // The gang is being stopped (a restart or cancel in flight; after a coordinator restart the
  // StopRanks may never have left): a rank reported running is told to stop again.
  if (job->stopping) SendStop(*job, worker_id);
  r.state = "RUNNING";
  r.pid = s.pid();
  r.cpus = s.cpus();
  if (size_t(s.rank()) < job->launches.size()) job->launches[s.rank()].Clear();  // not resent
  SaveRank(*job, s.rank());
  // A short rank may already have exited (its start came before its exit): it counts as
  // started, or a fast job would go PLACED -> SUCCEEDED without ever being RUNNING.
  const bool all_running =
      std::all_of(job->ranks.begin(), job->ranks.end(), [](const RankRecord& x) {
        return x.state == "RUNNING" || (x.state == "EXITED" && x.exit_code == 0);
      });
  if (all_running && job->rec.state == JobState::kPlaced) {
    if (job->rec.started_ms == 0) job->rec.started_ms = wire::NowUnixMs();
    Transition(*job, JobState::kRunning,
               "all " + std::to_string(job->rec.ranks) + " rank(s) running (attempt " +
                   std::to_string(job->rec.attempt + 1) + ")");
  }
}

void JobManager::OnRankExited(const std::string& worker_id, const proto::RankStatus& s) {
  Job* job = FindJob(s.job_id());
  if (!job || job->rec.attempt != s.attempt() || s.rank() < 0 ||
      s.rank() >= static_cast<int>(job->ranks.size()))
    return;
  RankRecord& r = job->ranks[s.rank()];
  if (RankIsDone(r)) return;
  Status st = store_->Begin();
  RankDone(*job, s.rank(), "EXITED", s.exit_code());
  // Stopped because its worker shuts down (WorkerLeaving): the attempt failed, whatever the
  // code (a rank that exits 0 on SIGTERM did not finish its work).
  const WorkerEntry* w = registry_->Find(worker_id);
  const bool leaving = w != nullptr && w->leaving;
  if (s.exit_code() != 0 || leaving) {
    std::string reason = "rank " + std::to_string(s.rank()) + " on worker " + worker_id +
                         " exited with code " + std::to_string(s.exit_code());
    if (!s.error().empty()) reason += " (" + s.error() + ")";
    if (leaving) reason = "worker " + worker_id + " is shutting down (" + reason + ")";
    FailAttempt(*job, reason);
  }
  if (st.ok()) st = store_->Commit();
  if (!st.ok()) GANTRY_LOG(ERROR, "job store commit failed").Field("error", st);
  MaybeFinishAttempt(*job);
}

void JobManager::OnWorkerLost(const std::string& worker_id) {
  std::vector<std::string> ids;
  for (auto& [id, job] : jobs_) ids.push_back(id);
  for (const std::string& id : ids) {
    Job* job = FindJob(id);
    if (!job) continue;
    bool hit = false;
    for (size_t i = 0; i < job->ranks.size(); ++i) {
      if (job->ranks[i].worker_id != worker_id || RankIsDone(job->ranks[i])) continue;
      RankDone(*job, static_cast<int>(i), "LOST", -1);
      hit = true;
    }
    if (!hit) continue;
    FailAttempt(*job, "worker " + worker_id + " was lost (no heartbeat for " +
                          std::to_string(registry_->heartbeat_interval().count() *
                                         registry_->lost_after_missed()) +
                          " ms)");
    MaybeFinishAttempt(*job);
  }
}

void JobManager::OnWorkerRegistered(const proto::RegisterWorker& reg) {
  const std::string& wid = reg.worker_id();
  std::set<std::pair<std::string, int>> reported;
  for (const proto::RankStatus& s : reg.ranks()) {
    Job* job = FindJob(s.job_id());
    const bool current = job && job->rec.attempt == s.attempt() && s.rank() >= 0 &&
                         s.rank() < static_cast<int>(job->ranks.size()) &&
                         job->ranks[s.rank()].worker_id == wid && !RankIsDone(job->ranks[s.rank()]);
    if (!current) {
      if (s.exited()) continue;
      SendStop(s.job_id(), s.attempt(), wid);  // an orphan of a finished job or older attempt
      continue;
    }
    reported.insert({s.job_id(), s.rank()});
    std::vector<int> gpus(s.gpu_indices().begin(), s.gpu_indices().end());
    registry_->Adopt(wid, gpus, job->rec.cpus_per_rank);
    if (s.rank() == 0 && job->rec.master_port > 0) {
      if (WorkerEntry* w = registry_->Find(wid)) w->ports_used.insert(job->rec.master_port);
    }
    if (s.rank() < static_cast<int>(job->confirmed.size())) job->confirmed[s.rank()] = true;
    if (s.exited())
      OnRankExited(wid, s);
    else
      OnRankStarted(wid, s);
  }
  // Ranks we placed on this worker that it does not report are gone (it restarted).
  std::vector<std::string> ids;
  for (auto& [id, job] : jobs_) ids.push_back(id);
  for (const std::string& id : ids) {
    Job* job = FindJob(id);
    if (!job) continue;
    bool lost = false;
    for (size_t i = 0; i < job->ranks.size(); ++i) {
      if (job->ranks[i].worker_id != wid || RankIsDone(job->ranks[i])) continue;
      if (reported.count({id, static_cast<int>(i)})) continue;
      RankDone(*job, static_cast<int>(i), "LOST", -1, /*release=*/false);
      lost = true;
    }
    if (lost) FailAttempt(*job, "worker " + wid + " re-registered without rank(s) of this job");
    if (job->adopting &&
        std::all_of(job->ranks.begin(), job->ranks.end(),
                    [&](const RankRecord& r) { return RankIsDone(r) || job->confirmed[r.rank]; }))
      job->adopting = false;
    MaybeFinishAttempt(*job);
  }
  dirty_ = true;
}

void JobManager::OnHeartbeat(const proto::Heartbeat& hb) {
  const std::string& wid = hb.worker_id();
  const SteadyTime now = clock_->Now();
  std::set<std::pair<std::string, int>> reported;  // (job, rank) of current attempts
  std::set<std::pair<std::string, int>> stops;     // (job, attempt) told to stop
  auto stop = [&](const std::string& job_id, int attempt) {
    if (stops.insert({job_id, attempt}).second) SendStop(job_id, attempt, wid);
  };
  for (const proto::RankStatus& s : hb.ranks()) {
    Job* job = FindJob(s.job_id());
    const bool current = job && job->rec.attempt == s.attempt() && s.rank() >= 0 &&
                         s.rank() < static_cast<int>(job->ranks.size()) &&
                         job->ranks[s.rank()].worker_id == wid;
    if (!current) {
      // A finished job or an older attempt whose StopRanks never arrived.
      if (!s.exited()) stop(s.job_id(), s.attempt());
      continue;
    }
    reported.insert({s.job_id(), s.rank()});
    // Exits come as RankExited, which the worker repeats until it is acknowledged: after the
    // rank's last output, so they are not taken from here.
    if (s.exited()) continue;
    if (RankIsDone(job->ranks[s.rank()])) {  // counted done (its slots freed) yet it runs
      stop(s.job_id(), s.attempt());
      continue;
    }
    if (job->stopping) stop(s.job_id(), s.attempt());
    if (job->ranks[s.rank()].state == "PLACED") {
      GANTRY_LOG(INFO, "rank start learned from a heartbeat (its RankStarted was lost)")
          .Field("job", s.job_id())
          .Field("rank", s.rank())
          .Field("worker", wid);
      OnRankStarted(wid, s);
    }
  }
  std::vector<std::string> ids;
  for (auto& [id, job] : jobs_) ids.push_back(id);
  for (const std::string& id : ids) {
    Job* job = FindJob(id);
    if (!job || job->stopping) continue;
    std::string failure;
    for (size_t i = 0; i < job->ranks.size(); ++i) {
      const RankRecord& r = job->ranks[i];
      if (r.worker_id != wid || RankIsDone(r) || reported.count({id, static_cast<int>(i)}))
        continue;
      const std::string name = "rank " + std::to_string(i) + " on worker " + wid;
      if (r.state != "PLACED") {
        failure = name + " is no longer reported by its worker";
        break;
      }
      if (i >= job->launches.size() || !job->launches[i].has_launch_rank()) continue;
      // A launch sent less than an interval ago may still be on its way.
      if (now - job->launch_sent[i] < registry_->heartbeat_interval()) continue;
      if (job->launch_resends[i] >= registry_->lost_after_missed()) {
        failure = name + " never started: its worker did not get the launch after " +
                  std::to_string(job->launch_resends[i] + 1) + " sends";
        break;
      }
      ++job->launch_resends[i];
      job->launch_sent[i] = now;
      outbox_.push_back({wid, job->launches[i]});
      GANTRY_LOG(WARNING, "launch resent: the worker's heartbeat lacks the rank")
          .Field("job", id)
          .Field("rank", static_cast<int64_t>(i))
          .Field("worker", wid)
          .Field("resend", job->launch_resends[i]);
    }
    if (failure.empty()) continue;
    Status st = store_->Begin();
    for (size_t i = 0; i < job->ranks.size(); ++i)
      if (job->ranks[i].worker_id == wid && !reported.count({id, static_cast<int>(i)}))
        RankDone(*job, static_cast<int>(i), "LOST", -1);
    FailAttempt(*job, failure);
    if (st.ok()) st = store_->Commit();
    if (!st.ok()) GANTRY_LOG(ERROR, "job store commit failed").Field("error", st);
    MaybeFinishAttempt(*job);
  }
}

void JobManager::OnRankLogs(const proto::RankLogs& logs) {
  // Workers resend a batch (the same lines under the same numbers) until it is acknowledged;
  // the store keeps each numbered line once (a unique index), whatever the order, across job
  // ends and coordinator restarts.
  std::vector<LogRow> rows;
  rows.reserve(logs.records_size());
  for (int i = 0; i < logs.records_size(); ++i) {
    const proto::LogRecord& rec = logs.records(i);
    LogRow row{0, logs.job_id(), logs.attempt(), logs.rank(), rec.stream(), rec.time_ms(),
               rec.text()};
    if (logs.has_first_line()) row.line = static_cast<int64_t>(logs.first_line()) + i;
    rows.push_back(std::move(row));
  }
  Status st = store_->Begin();
  if (st.ok()) {
    st = store_->AppendLogs(rows);
    if (st.ok()) {
      st = store_->Commit();
    } else {
      store_->Rollback();  // an open transaction would swallow every later write
    }
  }
  if (!st.ok())
    GANTRY_LOG(ERROR, "storing logs failed").Field("job", logs.job_id()).Field("error", st);
  Job* job = FindJob(logs.job_id());
  if (st.ok() && job && logs.rank() == 0 && logs.attempt() == job->rec.attempt) {
    for (const LogRow& row : rows)
      if (row.seq != 0) UpdateProgress(*job, row.text);  // new lines only
  }
}

// Training ranks log JSON lines ({"msg":"step","step":10,"loss":2.3,"tokens_per_s":...}).
void JobManager::UpdateProgress(Job& job, const std::string& line) {
  const size_t b = line.find('{');
  if (b == std::string::npos || line.find("\"step\"") == std::string::npos) return;
  auto j = nlohmann::json::parse(line.begin() + b, line.end(), nullptr, false);
  if (!j.is_object() || !j.contains("step") || !j["step"].is_number()) return;
  proto::JobProgress& p = job.progress;
  p.set_step(j["step"].get<int64_t>());
  for (const char* k : {"total_steps", "steps"})
    if (j.contains(k) && j[k].is_number()) p.set_total_steps(j[k].get<int64_t>());
  if (j.contains("loss") && j["loss"].is_number()) p.set_loss(j["loss"].get<double>());
  for (const char* k : {"tokens_per_s", "samples_per_s"}) {
    if (j.contains(k) && j[k].is_number()) {
      p.set_throughput(j[k].get<double>());
      p.set_throughput_unit(std::string(k) == "tokens_per_s" ? "tokens/s" : "samples/s");
    }
  }
  p.set_updated_ms(wire::NowUnixMs());
}

void JobManager::Tick() {
  const SteadyTime now = clock_->Now();
  std::vector<std::string> ids;
  for (auto& [id, job] : jobs_) ids.push_back(id);
  for (const std::string& id : ids) {
    Job* job = FindJob(id);
    if (!job) continue;
    if (job->adopting && now >= job->adopt_deadline) {
      job->adopting = false;
      bool lost = false;
      for (size_t i = 0; i < job->ranks.size(); ++i) {
        if (RankIsDone(job->ranks[i]) || job->confirmed[i]) continue;
        RankDone(*job, static_cast<int>(i), "LOST", -1);
        lost = true;
      }
      if (lost)
        FailAttempt(*job, "rank(s) not reported by their worker after the coordinator restarted");
      MaybeFinishAttempt(*job);
      continue;
    }
    if (job->stopping && now >= job->stop_deadline && !job->AllDone()) {
      for (size_t i = 0; i < job->ranks.size(); ++i)
        RankDone(*job, static_cast<int>(i), "LOST", -1);
      MaybeFinishAttempt(*job);
    }
  }
  std::vector<RoutedReply> expired;
  kv_->Expire(now, kv_replies_);
  stats_.jobs_by_state.clear();
  for (auto& [id, job] : jobs_) stats_.jobs_by_state[JobStateName(job->rec.state)]++;
  if (dirty_) {
    dirty_ = false;
    RunScheduler();
  }
}

}  // namespace gantry::coordinator
