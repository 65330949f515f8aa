// JobManager: submission, scheduling passes, launch, and queries (see job_manager.h).
// Rank events, failures and recovery live in job_manager_events.cc.
#include "coordinator/job_manager.h"

#include <fstream>
#include <nlohmann/json.hpp>

#include "base/job_spec.h"
#include "base/logging.h"
#include "coordinator/job_manager_internal.h"
#include "proto/wire.h"

namespace gantry::coordinator {

std::string RandomToken() {
  unsigned char buf[16] = {0};
  std::ifstream in("/dev/urandom", std::ios::binary);
  in.read(reinterpret_cast<char*>(buf), sizeof(buf));
  static const char kHex[] = "0123456789abcdef";
  std::string out;
  for (unsigned char c : buf) {
    out += kHex[c >> 4];
    out += kHex[c & 15];
  }
  return out;
}

JobManager::JobManager(JobStore* store, WorkerRegistry* registry, Rendezvous* kv,
                       const Clock* clock, ManagerOptions options)
    : store_(store), registry_(registry), kv_(kv), clock_(clock), options_(std::move(options)) {}

JobManager::~JobManager() = default;

JobManager::Job* JobManager::FindJob(const std::string& id) {
  auto it = jobs_.find(id);
  return it == jobs_.end() ? nullptr : it->second.get();
}

void JobManager::SaveJob(const Job& job) {
  JobRecord rec = job.rec;
  rec.progress = job.progress.SerializeAsString();
  Status st = store_->UpsertJob(rec);
  if (!st.ok())
    GANTRY_LOG(ERROR, "job store write failed").Field("job", job.rec.id).Field("error", st);
}

void JobManager::SaveRank(const Job& job, int rank) {
  Status st = store_->UpsertRank(job.ranks[rank]);
  if (!st.ok())
    GANTRY_LOG(ERROR, "job store write failed").Field("job", job.rec.id).Field("error", st);
}

void JobManager::Transition(Job& job, JobState state, const std::string& reason) {
  job.rec.state = state;
  const int64_t now_ms = wire::NowUnixMs();
  if (IsTerminal(state)) job.rec.finished_ms = now_ms;
  SaveJob(job);
  Status st = store_->AddEvent({job.rec.id, now_ms, JobStateName(state), reason, job.rec.attempt});
  if (!st.ok())
    GANTRY_LOG(ERROR, "job store write failed").Field("job", job.rec.id).Field("error", st);
  GANTRY_LOG(INFO, "job state")
      .Field("job", job.rec.id)
      .Field("state", JobStateName(state))
      .Field("attempt", job.rec.attempt)
      .Field("reason", reason);
  dirty_ = true;
}

StatusOr<std::string> JobManager::Submit(const proto::SubmitJob& req, const std::string& tenant) {
  const std::string source = req.source_name().empty() ? "<submitted>" : req.source_name();
  GANTRY_ASSIGN_OR_RETURN(JobSpec spec, ParseJobSpec(req.spec_yaml(), source));
  if (spec.kind == JobKind::kServe) {
    // The spec format is settled, but no `gantry serve` exists yet: every rank would fail at
    // once and the gang restart until restarts.max ran out.
    return UnimplementedError(source + ": kind 'serve' needs `gantry serve`, which this gantry "
                              "does not have yet; run train or command jobs");
  }
  if (!tenant.empty() && spec.resources.tenant != "default" && spec.resources.tenant != tenant)
    return PermissionDeniedError("job spec names tenant '" + spec.resources.tenant +
                                 "' but your token belongs to tenant '" + tenant + "'");
  auto job = std::make_unique<Job>();
  JobRecord& r = job->rec;
  r.sequence = store_->NextSequence();
  r.id = SanitizeName(spec.name) + "-" + std::to_string(r.sequence);
  r.name = spec.name;
  r.kind = JobKindName(spec.kind);
  r.tenant = tenant.empty() ? spec.resources.tenant : tenant;
  r.priority = PriorityClass(spec.resources.priority);
  r.max_restarts = spec.restarts.max;
  r.spec_yaml = req.spec_yaml();
  r.workdir = req.workdir();
  r.ranks = spec.resources.ranks;
  r.gpus_per_rank = spec.resources.gpus_per_rank;
  r.cpus_per_rank = spec.resources.cpus_per_rank;
  r.labels = spec.resources.labels;
  r.submitted_ms = wire::NowUnixMs();
  job->submitted_at = clock_->Now();
  if (spec.kind == JobKind::kTrain) job->progress.set_total_steps(spec.train.steps);
  const std::string id = r.id;
  GANTRY_RETURN_IF_ERROR(store_->Begin());
  jobs_[id] = std::move(job);
  Transition(*jobs_[id], JobState::kPending, "submitted by tenant " + jobs_[id]->rec.tenant);
  GANTRY_RETURN_IF_ERROR(store_->Commit());
  return id;
}

void JobManager::RunScheduler() {
  const auto t0 = std::chrono::steady_clock::now();
  ClusterView view;
  std::vector<std::string> host_ids;
  for (const auto& [id, w] : registry_->workers()) {
    if (w.lost || w.leaving) continue;
    HostState h;
    h.id = id;
    h.gpus_total = w.resources.gpus_size();
    h.gpus_free = h.gpus_total - static_cast<int>(w.gpus_used.size());
    h.cpus_total = w.resources.cpu_slots();
    h.cpus_free = h.cpus_total - w.cpus_used;
    h.labels.insert(w.resources.labels().begin(), w.resources.labels().end());
    view.hosts.push_back(std::move(h));
    host_ids.push_back(id);
  }
  std::vector<GangRequest> queue;
  std::vector<Job*> queued;
  std::vector<std::pair<Job*, Status>> unlaunchable;
  for (auto& [id, job] : jobs_) {
    for (const RankRecord& rk : job->ranks)
      if (!RankIsDone(rk)) view.tenant_gpus_used[job->rec.tenant] += job->rec.gpus_per_rank;
    if (job->rec.state != JobState::kPending) continue;
    // A spec stored by another coordinator version that these rules refuse cannot be
    // launched (a command job would start without its argv): it fails, saying why.
    if (!job->spec_checked) {
      StatusOr<JobSpec> spec = ParseJobSpec(job->rec.spec_yaml, job->rec.name);
      if (!spec.ok()) {
        unlaunchable.emplace_back(job.get(), spec.status());
        continue;
      }
      job->spec_checked = true;
    }
    GangRequest g;
    g.job_id = id;
    g.tenant = job->rec.tenant;
    g.priority = job->rec.priority;
    g.sequence = job->rec.sequence;
    g.ranks = job->rec.ranks;
    g.gpus_per_rank = job->rec.gpus_per_rank;
    g.cpus_per_rank = job->rec.cpus_per_rank;
    g.labels = job->rec.labels;
    g.submitted = job->submitted_at;
    queue.push_back(std::move(g));
    queued.push_back(job.get());
  }
  if (!unlaunchable.empty()) {
    Status st = store_->Begin();
    for (auto& [job, why] : unlaunchable) {
      job->rec.error = "its stored spec does not parse with this coordinator: " + why.message();
      Transition(*job, JobState::kFailed, job->rec.error);
    }
    if (st.ok()) st = store_->Commit();
    if (!st.ok()) GANTRY_LOG(ERROR, "job store commit failed").Field("error", st);
  }
  if (queue.empty()) return;
  SchedulerOptions opts = options_.scheduling;
  opts.previous_reservation = {};
  if (!reservation_.job_id.empty()) {
    opts.previous_reservation.job_id = reservation_.job_id;
    for (int old : reservation_.host_indices) {
      if (old < 0 || old >= static_cast<int>(last_host_ids_.size())) continue;
      auto it = std::find(host_ids.begin(), host_ids.end(), last_host_ids_[old]);
      if (it != host_ids.end())
        opts.previous_reservation.host_indices.push_back(it - host_ids.begin());
    }
  }
  ScheduleResult result = Schedule(queue, view, opts, clock_->Now());
  reservation_ = result.reservation;
  last_host_ids_ = host_ids;
  for (const WaitingGang& w : result.waiting)
    queued[w.queue_index]->waiting = WaitMessage(queue[w.queue_index], w.reason, opts, view);
  if (result.placed.empty()) return;
  Status st = store_->Begin();
  for (const GangPlacement& p : result.placed) {
    Job& job = *queued[p.queue_index];
    stats_.queue_wait_s.push_back(std::chrono::duration<double>(p.queue_wait).count());
    Launch(job, p, host_ids);
  }
  if (st.ok()) st = store_->Commit();
  if (!st.ok()) GANTRY_LOG(ERROR, "job store commit failed").Field("error", st);
  stats_.placement_s.push_back(
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
}

void JobManager::Launch(Job& job, const GangPlacement& placement,
                        const std::vector<std::string>& host_ids) {
  JobRecord& r = job.rec;
  r.token = RandomToken();
  job.ranks.assign(r.ranks, RankRecord{});
  job.launches.assign(r.ranks, proto::Envelope{});
  job.launch_sent.assign(r.ranks, clock_->Now());
  job.launch_resends.assign(r.ranks, 0);
  job.waiting.clear();
  job.stopping = false;
  job.adopting = false;
  std::map<std::string, int> per_host, next_local, group_of;
  for (int h : placement.rank_hosts) {
    per_host[host_ids[h]]++;
    group_of.emplace(host_ids[h], int(group_of.size()));  // hosts in order of their first rank
  }
  const std::string master = host_ids[placement.rank_hosts[0]];
  const WorkerEntry* mw = registry_->Find(master);
  r.master_addr = mw ? mw->address : "127.0.0.1";
  r.master_port =
      registry_->AllocatePort(master, options_.port_base, options_.port_count,
                              static_cast<int>(std::hash<std::string>()(r.id) % 997) + r.attempt);
  std::set<std::string> hosts_used;
  for (int rank = 0; rank < r.ranks; ++rank) {
    const std::string& wid = host_ids[placement.rank_hosts[rank]];
    hosts_used.insert(wid);
    RankRecord& rk = job.ranks[rank];
    rk = RankRecord{r.id, r.attempt, rank, wid, "PLACED", 0, 0, {}};
    auto gpus = registry_->Allocate(wid, r.gpus_per_rank, r.cpus_per_rank);
    if (gpus.ok()) rk.gpu_indices = *gpus;
    SaveRank(job, rank);
    proto::Envelope env;
    env.set_version(wire::kProtocolVersion);
    proto::LaunchRank* l = env.mutable_launch_rank();
    l->set_job_id(r.id);
    l->set_attempt(r.attempt);
    l->set_rank(rank);
    l->set_world_size(r.ranks);
    l->set_local_rank(next_local[wid]++);
    l->set_local_world_size(per_host[wid]);
    l->set_group_rank(group_of[wid]);
    l->set_group_world_size(int(group_of.size()));
    l->set_max_restarts(r.max_restarts);
    l->set_master_addr(r.master_addr);
    l->set_master_port(r.master_port);
    l->set_token(r.token);
    l->set_kind(r.kind);
    l->set_spec_yaml(r.spec_yaml);
    l->set_coordinator(options_.coordinator_endpoint);
    l->set_cpus(r.cpus_per_rank);
    for (int g : rk.gpu_indices) l->add_gpu_indices(g);
    FillCommand(r, l);
    job.launches[rank] = env;
    outbox_.push_back({wid, std::move(env)});
  }
  std::string where;
  for (const auto& h : hosts_used) where += (where.empty() ? "" : ", ") + h;
  Transition(job, JobState::kPlaced,
             "placed " + std::to_string(r.ranks) + " rank(s) on " + where + "; master " +
                 r.master_addr + ":" + std::to_string(r.master_port));
}

bool JobManager::ValidToken(const std::string& job_id, int attempt,
                            const std::string& token) const {
  auto it = jobs_.find(job_id);
  return it != jobs_.end() && it->second->rec.attempt == attempt && !token.empty() &&
         it->second->rec.token == token && !IsTerminal(it->second->rec.state);
}

std::vector<Outgoing> JobManager::TakeOutbox() { return std::exchange(outbox_, {}); }
std::vector<RoutedReply> JobManager::TakeKvReplies() { return std::exchange(kv_replies_, {}); }

proto::JobInfo JobManager::ToInfo(const Job& job) const {
  const JobRecord& r = job.rec;
  proto::JobInfo info;
  info.set_job_id(r.id);
  info.set_name(r.name);
  info.set_kind(r.kind);
  info.set_tenant(r.tenant);
  info.set_priority(PriorityName(r.priority));
  info.set_state(JobStateName(r.state));
  info.set_attempt(r.attempt);
  info.set_max_restarts(r.max_restarts);
  info.set_ranks(r.ranks);
  info.set_gpus_per_rank(r.gpus_per_rank);
  info.set_cpus_per_rank(r.cpus_per_rank);
  info.set_submitted_ms(r.submitted_ms);
  info.set_started_ms(r.started_ms);
  info.set_finished_ms(r.finished_ms);
  info.set_error(r.error);
  info.set_waiting(job.waiting);
  *info.mutable_progress() = job.progress;
  for (const RankRecord& rk : job.ranks) {
    proto::RankInfo* ri = info.add_rank_info();
    ri->set_rank(rk.rank);
    ri->set_worker_id(rk.worker_id);
    ri->set_state(rk.state);
    ri->set_exit_code(rk.exit_code);
    ri->set_pid(rk.pid);
    for (int g : rk.gpu_indices) ri->add_gpu_indices(g);
    ri->set_cpus(rk.cpus);
  }
  return info;
}

StatusOr<proto::JobInfo> JobManager::Info(const std::string& job_id, bool describe) {
  proto::JobInfo info;
  if (Job* job = FindJob(job_id)) {
    info = ToInfo(*job);
  } else {
    GANTRY_ASSIGN_OR_RETURN(JobRecord rec, store_->LoadJob(job_id));
    Job tmp;
    tmp.rec = rec;
    tmp.progress.ParseFromString(rec.progress);
    auto ranks = store_->LoadRanks(rec.id, rec.attempt);
    if (ranks.ok()) tmp.ranks = *ranks;
    info = ToInfo(tmp);
  }
  if (describe) {
    GANTRY_ASSIGN_OR_RETURN(auto events, store_->LoadEvents(job_id));
    for (const EventRecord& e : events) {
      proto::JobEvent* pe = info.add_events();
      pe->set_time_ms(e.time_ms);
      pe->set_state(e.state);
      pe->set_reason(e.reason);
      pe->set_attempt(e.attempt);
    }
    if (Job* job = FindJob(job_id))
      info.set_spec_yaml(job->rec.spec_yaml);
    else if (auto rec = store_->LoadJob(job_id); rec.ok())
      info.set_spec_yaml(rec->spec_yaml);
  }
  return info;
}

StatusOr<proto::JobList> JobManager::List(bool all, int limit) {
  proto::JobList list;
  GANTRY_ASSIGN_OR_RETURN(auto records, store_->LoadJobs(all, limit > 0 ? limit : 200));
  for (const JobRecord& rec : records) {
    if (Job* job = FindJob(rec.id)) {
      *list.add_jobs() = ToInfo(*job);
    } else {
      Job tmp;
      tmp.rec = rec;
      tmp.progress.ParseFromString(rec.progress);
      *list.add_jobs() = ToInfo(tmp);
    }
  }
  return list;
}

StatusOr<proto::LogBatch> JobManager::Logs(const proto::GetLogs& req) {
  GANTRY_ASSIGN_OR_RETURN(JobRecord rec, store_->LoadJob(req.job_id()));
  // Bounded pages (clients page with after_seq): one request must not load a whole log into
  // the single-threaded coordinator or make a reply over the message size limit.
  const int limit = std::clamp(req.max_records() > 0 ? req.max_records() : 1000, 1, 10000);
  GANTRY_ASSIGN_OR_RETURN(auto rows,
                          store_->ReadLogs(req.job_id(), req.rank(), req.after_seq(), limit));
  proto::LogBatch batch;
  uint64_t last = req.after_seq();
  size_t bytes = 0;
  for (const LogRow& row : rows) {
    bytes += row.text.size() + 64;
    if (bytes > wire::MaxMessageBytes() / 2 && batch.records_size() > 0) break;
    proto::LogRecord* r = batch.add_records();
    r->set_seq(row.seq);
    r->set_rank(row.rank);
    r->set_attempt(row.attempt);
    r->set_stream(row.stream);
    r->set_time_ms(row.time_ms);
    r->set_text(row.text);
    last = row.seq;
  }
  batch.set_last_seq(last);
  Job* job = FindJob(req.job_id());
  batch.set_job_finished(job ? IsTerminal(job->rec.state) && job->AllDone()
                             : IsTerminal(rec.state));
  return batch;
}

}  // namespace gantry::coordinator
