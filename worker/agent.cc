// WorkerAgent loop: connection and registration, heartbeats, launches, output relay, exits.
#include "worker/agent.h"

#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zmq.h>

#include <cerrno>
#include <cstdlib>
#include <deque>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

#include "base/cpu_set.h"
#include "base/dir_lock.h"
#include "base/http_server.h"
#include "base/job_spec.h"
#include "base/logging.h"
#include "base/metrics.h"
#include "proto/channel.h"
#include "proto/wire.h"
#include "worker/cpu_pool.h"
#include "worker/leftovers.h"
#include "worker/rank_process.h"
#include "worker/resources.h"

namespace gantry::worker {

namespace {
using Clock = std::chrono::steady_clock;
using RankKey = std::tuple<std::string, int, int>;  // job, attempt, rank

// "job/attempt/rank": the rank's GANTRY_RANK_KEY, which its descendants inherit.
std::string RankKeyString(const RankKey& key) {
  return std::get<0>(key) + "/" + std::to_string(std::get<1>(key)) + "/" +
         std::to_string(std::get<2>(key));
}
constexpr std::chrono::milliseconds kPollInterval{50};
constexpr std::chrono::milliseconds kLogFlushInterval{100};
constexpr size_t kLogBatchLines = 256;
constexpr size_t kLogBatchBytes = 1 << 20;  // well under GANTRY_MAX_MESSAGE_BYTES (8 MiB)
// Output held for a coordinator that is away, all ranks together; beyond it the oldest
// batches go, and a line in the rank's log says how many lines were lost.
constexpr size_t kLogSpoolBytes = 64 << 20;
// Batches resent per heartbeat (or registration) at most, oldest first.
constexpr int kLogResendBatches = 32;
constexpr std::chrono::milliseconds kShutdownGrace{3000};

// Output lines sent to the coordinator and kept until it acknowledges them: resent after a
// reconnect (ZeroMQ drops what a closed socket still held) or when no ack comes.
struct LogBatch {
  std::vector<uint64_t> ids;      // every send's request id
  uint64_t first_line = 0;
  std::vector<OutputLine> lines;
  size_t bytes = 0;
  Clock::time_point sent{};
  Clock::time_point created{};
  uint64_t lost_reported = 0;  // lines its first line (a loss report) says were lost
};

struct Rank {
  std::unique_ptr<RankProcess> proc;
  proto::RankStatus status;
  std::vector<OutputLine> pending;
  std::deque<LogBatch> unacked;
  uint64_t next_line = 0;      // number of the next output line
  uint64_t dropped_lines = 0;  // spool overflow, reported in the next batch
  bool exit_sent = false;
  bool exit_acked = false;
  bool exit_registered = false;  // its exit was in the last RegisterWorker sent
  bool Finished() const {
    return exit_acked && pending.empty() && unacked.empty();
  }
  std::vector<int> cpus;  // taken from the CpuPool (--pin-cpus); given back at exit
};
}  // namespace

struct WorkerAgent::Impl {
  WorkerOptions opt;
  proto::WorkerResources resources;
  std::optional<CpuPool> cpu_pool;  // --pin-cpus
  void* socket = nullptr;
  uint64_t next_id = 1;
  bool registered = false;
  uint64_t epoch = 0;  // registrations sent (heartbeats carry it)
  Clock::time_point register_sent{}, last_rx{}, last_hb{}, last_flush{}, reconnect_at{};
  std::chrono::milliseconds backoff{250};
  std::chrono::milliseconds interval{1000};
  int lost_after = 5;
  std::map<RankKey, Rank> ranks;
  struct ExitRequest {
    RankKey key;
    Clock::time_point sent;
  };
  // RankExited awaiting its ack, by request id; sent again when none came (a lost message).
  // Every id it went under stays here until one of them is acknowledged: an ack that comes
  // after a resend still counts.
  std::map<uint64_t, ExitRequest> exit_requests;
  // RankLogs awaiting its ack: request id -> (rank, first line of the batch), every id a
  // batch was sent under.
  std::map<uint64_t, std::pair<RankKey, uint64_t>> log_requests;
  size_t spool_bytes = 0;                    // bytes of every rank's unacked batches
  std::unique_ptr<HttpServer> http;  // --metrics-port
  // gantry_worker_* series (label worker), created once in StartMetrics.
  struct Metrics {
    Gauge *connected, *ranks_running, *cpu_slots, *gpus;
    Counter *launches, *launch_failures, *exits_ok, *exits_failed, *reconnects, *heartbeats;
  } m{};

  std::string abs_dir;   // --dir, absolute (GANTRY_WORKER_DIR of the ranks)
  int dir_lock = -1;     // worker.lock in --dir, held for the process's life
  std::set<pid_t> orphans;  // ranks' descendants reparented here, until reaped
  Clock::time_point last_orphan_scan{};
  std::chrono::milliseconds exec_wait_left{5000};  // shared by the launches of one pass

  ~Impl() {
    if (socket) zmq_close(socket);
    if (dir_lock >= 0) close(dir_lock);
  }
  // Kills (SIGKILL) the processes a previous worker on this directory left behind.
  void KillLeftoversOfThisDir();
  // Ranks' descendants that outlived their rank (a setsid child escapes the group kill) are
  // this process's children (it is their subreaper): killed once their rank is done, reaped.
  // `all_done`: every rank is over (shutdown): every orphan goes, whatever its rank key.
  void ReapOrphans(bool all_done = false);
  uint64_t SendRequest(proto::Envelope env, bool want_reply = true) {
    const uint64_t id = want_reply ? next_id++ : 0;
    env.set_version(wire::kProtocolVersion);
    env.set_request_id(id);
    Status st = wire::Send(socket, wire::Encode(env), nullptr, /*dont_wait=*/true);
    if (!st.ok()) GANTRY_LOG(DEBUG, "send to coordinator failed").Field("error", st);
    return id;
  }
  bool stopping = false;  // Run is shutting down: launch nothing more
  uint64_t leaving_request = 0;  // WorkerLeaving's request id while its ack is awaited
  bool leaving_acked = false;
  // Handles every message waiting on the socket (at most 64 per call).
  void ReceiveAll();
  Status StartMetrics();
  void UpdateGauges();
  Status Connect();
  void Register();
  void OnMessage(const proto::Envelope& env);
  void Launch(const proto::LaunchRank& l);
  // The rank a launch names, added with its identity in its status; nullptr for a launch
  // delivered twice.
  Rank* TrackRank(const proto::LaunchRank& l);
  // Polls the socket and handles what comes until `done()` or `until`.
  void PumpUntil(const std::function<bool()>& done, Clock::time_point until);
  void ReportExit(const RankKey& key, Rank& r);
  void ResendUnackedExits();
  void SendLogBatch(const RankKey& key, LogBatch& b);
  // Resends unacknowledged output: every batch (after registering again) or those older than
  // two heartbeat intervals.
  void ResendLogs(bool all);
  // An ack (or, `refused`, an error reply) for a RankLogs: the batch is retired.
  void OnLogAck(uint64_t request_id, bool refused);
  // Removes a batch from the spool; `lost` counts its lines as lost (reported in the log).
  void DropBatch(Rank& r, std::deque<LogBatch>::iterator b, bool lost);
  void EvictOldest();  // while the spool is over kLogSpoolBytes
  void FlushLogs(bool force);
  void Service();
  void StopAll(std::chrono::milliseconds grace);
};

void WorkerAgent::Impl::ReceiveAll() {
  // Launches of this pass share one exec wait: several hung execs (a dead mount) must not
  // stall the loop past a heartbeat's worth of deadlines.
  exec_wait_left = std::chrono::milliseconds(5000);
  for (int budget = 0; budget < 64; ++budget) {
    zmq_msg_t m;
    zmq_msg_init(&m);
    if (zmq_msg_recv(&m, socket, ZMQ_DONTWAIT) < 0) {
      zmq_msg_close(&m);
      break;
    }
    auto env = wire::Decode(zmq_msg_data(&m), zmq_msg_size(&m), wire::kHardMaxMessageBytes);
    zmq_msg_close(&m);
    if (env.ok()) {
      OnMessage(*env);
    } else {
      GANTRY_LOG(WARNING, "bad message from coordinator").Field("error", env.status());
    }
  }
}

Status WorkerAgent::Impl::StartMetrics() {
  MetricsRegistry& r = MetricsRegistry::Default();
  const MetricLabels w = {{"worker", opt.worker_id}};
  auto with = [&](const char* k, const char* v) {
    MetricLabels l = w;
    l.emplace_back(k, v);
    return l;
  };
  m.connected = &r.GetGauge("gantry_worker_connected",
                            "1 while registered with the coordinator, 0 while reconnecting", w);
  m.ranks_running = &r.GetGauge("gantry_worker_ranks_running", "Rank processes alive", w);
  m.cpu_slots = &r.GetGauge("gantry_worker_cpu_slots", "CPU slots offered", w);
  m.gpus = &r.GetGauge("gantry_worker_gpus", "GPUs offered", w);
  m.launches = &r.GetCounter("gantry_worker_rank_launches_total", "Rank processes started", w);
  m.launch_failures = &r.GetCounter("gantry_worker_rank_launch_failures_total",
                                    "Ranks that could not be started (exec failed)", w);
  m.exits_ok = &r.GetCounter("gantry_worker_rank_exits_total", "Rank processes that ended",
                             with("outcome", "ok"));
  m.exits_failed = &r.GetCounter("gantry_worker_rank_exits_total", "Rank processes that ended",
                                 with("outcome", "failed"));
  m.reconnects = &r.GetCounter("gantry_worker_reconnects_total",
                               "Times the coordinator went silent and the worker reconnected", w);
  m.heartbeats = &r.GetCounter("gantry_worker_heartbeats_total", "Heartbeats sent", w);
  m.cpu_slots->Set(resources.cpu_slots());
  m.gpus->Set(resources.gpus_size());
  if (opt.metrics_port < 0) return OkStatus();
  auto server = StartMetricsServer(opt.metrics_host, opt.metrics_port, r);
  if (!server.ok()) {
    const Status& st = server.status();
    return Status(st.code(), "worker --metrics-port " + std::to_string(opt.metrics_port) + ": " +
                                 st.message());
  }
  http = std::move(server).value();
  return OkStatus();
}

void WorkerAgent::Impl::UpdateGauges() {
  int running = 0;
  for (const auto& [key, r] : ranks) running += r.proc && !r.proc->exited();
  m.ranks_running->Set(running);
  m.connected->Set(registered ? 1 : 0);
}

Status WorkerAgent::Impl::Connect() {
  if (socket) zmq_close(socket);
  socket = zmq_socket(wire::Context(), ZMQ_DEALER);
  if (!socket) return wire::ZmqError("creating the worker's DEALER socket");
  const int linger = 0, ivl = 100, ivl_max = 2000;
  zmq_setsockopt(socket, ZMQ_LINGER, &linger, sizeof(linger));
  zmq_setsockopt(socket, ZMQ_RECONNECT_IVL, &ivl, sizeof(ivl));
  zmq_setsockopt(socket, ZMQ_RECONNECT_IVL_MAX, &ivl_max, sizeof(ivl_max));
  wire::ChannelOptions co;
  co.server_public_key = opt.server_public_key;
  co.public_key = opt.public_key;
  co.secret_key = opt.secret_key;
  GANTRY_RETURN_IF_ERROR(wire::ApplyCurveClient(socket, co));
  GANTRY_RETURN_IF_ERROR(wire::CheckEndpoint(opt.coordinator, "--coordinator"));
  if (zmq_connect(socket, opt.coordinator.c_str()) != 0)
    return wire::ZmqError("connecting to coordinator " + opt.coordinator);
  Register();
  return OkStatus();
}

void WorkerAgent::Impl::Register() {
  proto::Envelope env;
  proto::RegisterWorker* reg = env.mutable_register_worker();
  reg->set_worker_id(opt.worker_id);
  reg->set_epoch(++epoch);
  reg->set_hostname(HostName());
  reg->set_address(opt.address);
  *reg->mutable_resources() = resources;
  for (auto& [key, r] : ranks) {
    *reg->add_ranks() = r.status;
    r.exit_registered = r.status.exited();  // the reply acknowledges these exits, no others
  }
  registered = false;
  register_sent = last_rx = Clock::now();
  SendRequest(std::move(env));
}

void WorkerAgent::Impl::OnMessage(const proto::Envelope& env) {
  last_rx = Clock::now();
  if (env.has_register_reply()) {
    registered = true;
    backoff = std::chrono::milliseconds(250);
    interval =
        std::chrono::milliseconds(std::max(50, env.register_reply().heartbeat_interval_ms()));
    lost_after = std::max(2, env.register_reply().lost_after_missed());
    // Exits included in the registration were processed there.
    for (auto& [key, r] : ranks) {
      // Only exits that were in the registration were processed there; one that happened
      // since (its report deferred behind its last output) is still to be sent.
      if (!r.exit_registered) continue;
      r.exit_sent = true;
      r.exit_acked = true;
    }
    for (auto it = exit_requests.begin(); it != exit_requests.end();) {
      auto r = ranks.find(it->second.key);
      it = r == ranks.end() || r->second.exit_acked ? exit_requests.erase(it) : std::next(it);
    }
    ResendLogs(/*all=*/true);  // what the old socket held is gone
    for (auto it = ranks.begin(); it != ranks.end();)
      it = it->second.Finished() ? ranks.erase(it) : std::next(it);
    GANTRY_LOG(INFO, "registered with coordinator")
        .Field("coordinator", opt.coordinator)
        .Field("worker", opt.worker_id);
  } else if (env.has_heartbeat_reply()) {
    // Not while shutting down: placeable again, it would drop the launches sent to it.
    if (!env.heartbeat_reply().registered() && !stopping) Register();
  } else if (env.has_ack()) {
    if (leaving_request != 0 && env.request_id() == leaving_request) leaving_acked = true;
    auto it = exit_requests.find(env.request_id());
    if (it != exit_requests.end()) {
      const RankKey key = it->second.key;
      for (auto e = exit_requests.begin(); e != exit_requests.end();)
        e = e->second.key == key ? exit_requests.erase(e) : std::next(e);
      auto r = ranks.find(key);
      if (r != ranks.end()) {
        r->second.exit_acked = true;
        if (r->second.Finished()) ranks.erase(r);
      }
    }
    OnLogAck(env.request_id(), /*refused=*/false);
  } else if (env.has_launch_rank()) {
    if (!stopping) {
      Launch(env.launch_rank());
    } else if (Rank* r = TrackRank(env.launch_rank())) {
      // Shutting down: say so at once (a silent drop left the rank PLACED until this worker
      // was taken for lost).
      r->status.set_exited(true);
      r->status.set_exit_code(143);
      r->status.set_error("not started: the worker is shutting down");
      const proto::LaunchRank& l = env.launch_rank();
      ReportExit({l.job_id(), l.attempt(), l.rank()}, *r);
    }
  } else if (env.has_stop_ranks()) {
    const auto& s = env.stop_ranks();
    for (auto& [key, r] : ranks) {
      if (std::get<0>(key) == s.job_id() && std::get<1>(key) == s.attempt() && r.proc)
        r.proc->Stop(std::chrono::milliseconds(std::max(0, s.grace_ms())));
    }
  } else if (env.has_error()) {
    GANTRY_LOG(WARNING, "coordinator error reply")
        .Field("request", env.request_id())
        .Field("error", wire::StatusFromError(env.error()));
    OnLogAck(env.request_id(), /*refused=*/true);  // a refused batch is final, not resent
  }
}

Rank* WorkerAgent::Impl::TrackRank(const proto::LaunchRank& l) {
  const RankKey key{l.job_id(), l.attempt(), l.rank()};
  if (ranks.count(key)) return nullptr;  // duplicate delivery
  Rank& r = ranks[key];
  r.status.set_job_id(l.job_id());
  r.status.set_attempt(l.attempt());
  r.status.set_rank(l.rank());
  return &r;
}

void WorkerAgent::Impl::Launch(const proto::LaunchRank& l) {
  Rank* tracked = TrackRank(l);
  if (tracked == nullptr) return;
  Rank& r = *tracked;
  const RankKey key{l.job_id(), l.attempt(), l.rank()};
  for (int g : l.gpu_indices()) r.status.add_gpu_indices(g);
  LaunchSpec spec;
  spec.argv.assign(l.argv().begin(), l.argv().end());
  std::string dir = opt.dir + "/jobs/" + l.job_id() + "/attempt-" + std::to_string(l.attempt());
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (l.kind() == "train" || l.kind() == "serve") {
    const std::string path = dir + "/spec.yaml";
    std::ofstream(path) << l.spec_yaml();
    const std::string abs = std::filesystem::absolute(path, ec).string();
    if (l.kind() == "train") {
      spec.argv = {opt.self_exe, "train", abs};
    } else {
      auto js = ParseJobSpec(l.spec_yaml(), abs);
      spec.argv = {opt.self_exe,
                   "serve",
                   js.ok() ? js->serve.model_dir : "",
                   "--shards",
                   std::to_string(js.ok() ? js->serve.shards : 1),
                   "--port",
                   std::to_string(js.ok() ? js->serve.port : 8501)};
    }
  }
  std::string visible;
  for (int g : l.gpu_indices()) visible += (visible.empty() ? "" : ",") + std::to_string(g);
  spec.env = {{"RANK", std::to_string(l.rank())},
              {"WORLD_SIZE", std::to_string(l.world_size())},
              {"LOCAL_RANK", std::to_string(l.local_rank())},
              {"LOCAL_WORLD_SIZE", std::to_string(l.local_world_size())},
              {"MASTER_ADDR", l.master_addr()},
              {"MASTER_PORT", std::to_string(l.master_port())},
              {"GANTRY_JOB_ID", l.job_id()},
              {"GANTRY_ATTEMPT", std::to_string(l.attempt())},
              {"GANTRY_COORDINATOR", l.coordinator()},
              {"GANTRY_TOKEN", l.token()},
              {"GANTRY_HOST_ID", opt.worker_id},
              {kWorkerDirEnv, abs_dir},
              {kWorkerPidEnv, std::to_string(getpid())},
              {kRankKeyEnv, RankKeyString(key)},
              {"GANTRY_ADVERTISE_ADDR", opt.address},
              {"PYTHONUNBUFFERED", "1"},
              // The rest of what torchrun gives its workers (one role, static membership),
              // so launchers and libraries that look for them (Lightning checks GROUP_RANK)
              // take a Gantry rank for a torchrun one. Gantry's store is its own: no agent
              // store to share.
              {"ROLE_NAME", "default"},
              {"ROLE_RANK", std::to_string(l.rank())},
              {"ROLE_WORLD_SIZE", std::to_string(l.world_size())},
              {"TORCHELASTIC_RUN_ID", l.job_id()},
              {"TORCHELASTIC_RESTART_COUNT", std::to_string(l.attempt())},
              {"TORCHELASTIC_USE_AGENT_STORE", "False"}};
  // Only from a coordinator that sends them (an older one leaves 0s that would read as
  // "one host" and "no restarts").
  if (l.group_world_size() > 0) {
    spec.env["GROUP_RANK"] = std::to_string(l.group_rank());
    spec.env["GROUP_WORLD_SIZE"] = std::to_string(l.group_world_size());
    spec.env["TORCHELASTIC_MAX_RESTARTS"] = std::to_string(l.max_restarts());
  }
  // torchrun's default for a program that sets no thread count: as many threads as the rank
  // holds CPU slots (torchrun: 1 with several processes per node), not one per core of the
  // host for every rank. gantry train sizes its own pool.
  if (l.kind() == "command" && std::getenv("OMP_NUM_THREADS") == nullptr) {
    spec.env["OMP_NUM_THREADS"] = std::to_string(std::max(1, l.cpus()));
  }
  if (!resources.gpus().empty() || !visible.empty()) spec.env["CUDA_VISIBLE_DEVICES"] = visible;
  std::string hcas;
  for (const auto& h : resources.rdma_devices()) hcas += (hcas.empty() ? "" : ",") + h;
  if (!hcas.empty()) spec.env["NCCL_IB_HCA"] = "=" + hcas;  // exact names, active ports only
  if (!opt.key_file.empty()) {
    spec.env[wire::kServerKeyEnv] = opt.server_key_file;
    spec.env[wire::kClientKeyEnv] = opt.key_file;
  }
  for (const auto& [k, v] : l.env()) spec.env[k] = v;
  spec.workdir = l.workdir();
  // The submitter's directory may not exist on this host: then the worker's. A workdir the
  // spec names must exist (RankProcess::Start says it does not, and the launch fails).
  if (spec.workdir.empty() ||
      (!l.workdir_required() && !std::filesystem::is_directory(spec.workdir, ec))) {
    spec.workdir = dir;
  }
  if (cpu_pool && l.cpus() > 0) {
    if (auto cpus = cpu_pool->Take(l.cpus())) {
      r.cpus = *cpus;
      spec.cpus = *cpus;
      r.status.set_cpus(CpuListString(*cpus));
      // As many compute threads as cores (torchrun sets OMP_NUM_THREADS too); the job's own
      // env wins.
      if (!l.env().contains("OMP_NUM_THREADS")) {
        spec.env["OMP_NUM_THREADS"] = std::to_string(cpus->size());
      }
    } else {
      GANTRY_LOG(WARNING, "rank runs unpinned: not enough free CPUs")
          .Field("job", l.job_id())
          .Field("rank", l.rank())
          .Field("cpus_wanted", l.cpus())
          .Field("cpus_free", int64_t(cpu_pool->free_count()));
    }
  }
  spec.exec_wait = exec_wait_left;
  const auto exec_started = Clock::now();
  auto proc = RankProcess::Start(spec);
  exec_wait_left = std::max(std::chrono::milliseconds(0),
                            exec_wait_left - std::chrono::duration_cast<std::chrono::milliseconds>(
                                                 Clock::now() - exec_started));
  if (!proc.ok()) {
    if (cpu_pool) cpu_pool->Give(std::exchange(r.cpus, {}));
    r.status.clear_cpus();
    r.status.set_exited(true);
    r.status.set_exit_code(127);
    r.status.set_error(proc.status().message());
    r.pending.push_back({"gantry", "launch failed: " + proc.status().message(), wire::NowUnixMs()});
    m.launch_failures->Inc();
    GANTRY_LOG(ERROR, "rank launch failed")
        .Field("job", l.job_id())
        .Field("rank", l.rank())
        .Field("error", proc.status());
    FlushLogs(true);
    ReportExit(key, r);
    return;
  }
  r.proc = std::move(proc).value();
  r.status.set_pid(r.proc->pid());
  m.launches->Inc();
  GANTRY_LOG(INFO, "rank started")
      .Field("job", l.job_id())
      .Field("attempt", l.attempt())
      .Field("rank", l.rank())
      .Field("pid", r.proc->pid())
      .Field("cpus", r.status.cpus().empty() ? std::string("any") : r.status.cpus());
  proto::Envelope env;
  env.mutable_rank_started()->set_worker_id(opt.worker_id);
  *env.mutable_rank_started()->mutable_rank() = r.status;
  SendRequest(std::move(env));
}

void WorkerAgent::Impl::ReportExit(const RankKey& key, Rank& r) {
  proto::Envelope env;
  env.mutable_rank_exited()->set_worker_id(opt.worker_id);
  *env.mutable_rank_exited()->mutable_rank() = r.status;
  exit_requests[SendRequest(std::move(env))] = {key, Clock::now()};
  r.exit_sent = true;
}

void WorkerAgent::Impl::ResendUnackedExits() {
  const auto now = Clock::now();
  std::map<RankKey, Clock::time_point> latest;  // last send per rank
  for (const auto& [id, e] : exit_requests) latest[e.key] = std::max(latest[e.key], e.sent);
  std::vector<RankKey> again;
  for (const auto& [key, sent] : latest)
    if (now - sent >= interval * 2) again.push_back(key);
  for (const RankKey& key : again) {
    auto r = ranks.find(key);
    if (r == ranks.end()) continue;
    GANTRY_LOG(WARNING, "rank exit not acknowledged; reporting it again")
        .Field("job", std::get<0>(key))
        .Field("rank", std::get<2>(key));
    ReportExit(key, r->second);
  }
}

void WorkerAgent::Impl::SendLogBatch(const RankKey& key, LogBatch& b) {
  proto::Envelope env;
  proto::RankLogs* logs = env.mutable_rank_logs();
  logs->set_job_id(std::get<0>(key));
  logs->set_attempt(std::get<1>(key));
  logs->set_rank(std::get<2>(key));
  logs->set_first_line(b.first_line);
  for (const OutputLine& line : b.lines) {
    proto::LogRecord* rec = logs->add_records();
    rec->set_stream(line.stream);
    rec->set_text(line.text);
    rec->set_time_ms(line.time_ms);
  }
  const uint64_t id = SendRequest(std::move(env));
  b.sent = Clock::now();
  b.ids.push_back(id);  // an ack under any of them retires the batch
  log_requests[id] = {key, b.first_line};
}

void WorkerAgent::Impl::ResendLogs(bool all) {
  // A bounded number per call, oldest first: a full spool resent at once would queue ahead of
  // the heartbeats (and past ZeroMQ's send limit, which drops them), and the coordinator would
  // take this worker for lost while it reads its backlog.
  const auto now = Clock::now();
  int budget = kLogResendBatches;
  for (auto& [key, r] : ranks) {
    for (LogBatch& b : r.unacked) {
      if (budget == 0) return;
      if (!all && now - b.sent < interval * 2) continue;
      SendLogBatch(key, b);
      --budget;
    }
  }
}

void WorkerAgent::Impl::DropBatch(Rank& r, std::deque<LogBatch>::iterator b, bool lost) {
  for (uint64_t id : b->ids) log_requests.erase(id);
  spool_bytes -= b->bytes;
  // An evicted loss report carries its count on: the lines it reported are still lost (they
  // were dropped from the total before, and the report itself counted as one line).
  if (lost) r.dropped_lines += b->lines.size() - (b->lost_reported > 0 ? 1 : 0) + b->lost_reported;
  r.unacked.erase(b);
}

void WorkerAgent::Impl::OnLogAck(uint64_t request_id, bool refused) {
  auto it = log_requests.find(request_id);
  if (it == log_requests.end()) return;
  const auto [key, first_line] = it->second;
  log_requests.erase(it);
  auto r = ranks.find(key);
  if (r == ranks.end()) return;
  auto& q = r->second.unacked;
  for (auto b = q.begin(); b != q.end(); ++b) {
    if (b->first_line != first_line) continue;
    DropBatch(r->second, b, /*lost=*/refused);
    break;
  }
  if (r->second.Finished()) ranks.erase(r);
}

void WorkerAgent::Impl::EvictOldest() {
  while (spool_bytes > kLogSpoolBytes) {  // the oldest batch of any rank goes first
    Rank* oldest = nullptr;
    for (auto& [key, r] : ranks) {
      if (!r.unacked.empty() &&
          (oldest == nullptr || r.unacked.front().created < oldest->unacked.front().created)) {
        oldest = &r;
      }
    }
    if (oldest == nullptr) return;
    DropBatch(*oldest, oldest->unacked.begin(), /*lost=*/true);
  }
}

void WorkerAgent::Impl::FlushLogs(bool force) {
  if (!force && Clock::now() - last_flush < kLogFlushInterval) return;
  last_flush = Clock::now();
  for (auto& [key, r] : ranks) {
    uint64_t reported = 0;
    if (r.dropped_lines > 0) {  // also for a rank that has exited: its log says so
      reported = std::exchange(r.dropped_lines, 0);
      r.pending.insert(r.pending.begin(),
                       {"gantry",
                        "gantry: " + std::to_string(reported) +
                            " output lines of this rank were lost: the worker's spool was full "
                            "(the coordinator was unreachable or did not keep up)",
                        wire::NowUnixMs()});
    }
    size_t i = 0;
    while (i < r.pending.size()) {
      // Lines and bytes are both bounded: a batch over the coordinator's message limit would
      // be refused whole (a line is at most 16 KiB, ~48 KiB once made valid UTF-8).
      LogBatch b;
      b.first_line = r.next_line;
      b.created = Clock::now();
      b.lost_reported = std::exchange(reported, 0);  // the report is this batch's first line
      for (size_t n = 0; i < r.pending.size() && n < kLogBatchLines; ++i, ++n) {
        const size_t line_bytes = r.pending[i].text.size() + 32;
        if (n > 0 && b.bytes + line_bytes > kLogBatchBytes) break;
        b.bytes += line_bytes;
        b.lines.push_back(std::move(r.pending[i]));
      }
      r.next_line += b.lines.size();
      SendLogBatch(key, b);
      spool_bytes += b.bytes;
      r.unacked.push_back(std::move(b));
      EvictOldest();
    }
    r.pending.clear();
  }
}

// Children: output, exits, kill deadlines.
void WorkerAgent::Impl::Service() {
  for (auto& [key, r] : ranks) {
    if (!r.proc) continue;
    const bool was_exited = r.proc->exited();
    const bool exited = r.proc->Poll();
    r.proc->ReadOutput(r.pending);
    if (exited && !was_exited) {
      r.status.set_exited(true);
      r.status.set_exit_code(r.proc->exit_code());
      if (r.proc->exit_code() != 0) r.status.set_error(r.proc->exit_description());
      if (cpu_pool) cpu_pool->Give(std::exchange(r.cpus, {}));
      (r.proc->exit_code() == 0 ? m.exits_ok : m.exits_failed)->Inc();
      GANTRY_LOG(INFO, "rank exited")
          .Field("job", std::get<0>(key))
          .Field("rank", std::get<2>(key))
          .Field("exit", r.proc->exit_description());
    }
  }
  FlushLogs(false);
  for (auto& [key, r] : ranks)
    if (r.status.exited() && !r.exit_sent && r.pending.empty()) ReportExit(key, r);
  if (Clock::now() - last_orphan_scan >= std::chrono::milliseconds(500)) {
    last_orphan_scan = Clock::now();
    ReapOrphans();
  }
}

void WorkerAgent::Impl::ReapOrphans(bool all_done) {
  std::set<pid_t> leaders;
  std::map<std::string, bool> live;  // rank key -> its leader still runs
  for (auto& [key, r] : ranks) {
    live[RankKeyString(key)] = r.proc && !r.proc->exited();
    if (r.proc) leaders.insert(r.proc->pid());
  }
  // Every child but a rank leader (RankProcess waits for those) is a descendant of a rank
  // reparented here: the worker starts nothing else. Each is reaped when it ends (one that
  // died before this scan, or cleared its environment, too: zombies would pile up).
  for (pid_t c : ChildrenExcept(leaders)) orphans.insert(c);
  for (auto it = orphans.begin(); it != orphans.end();) {
    const pid_t c = *it;
    int status = 0;
    if (waitpid(c, &status, WNOHANG) == c || (kill(c, 0) != 0 && errno == ESRCH)) {
      it = orphans.erase(it);
      continue;
    }
    const std::optional<std::string> key = EnvOf(c, kRankKeyEnv);
    auto rank = key ? live.find(*key) : live.end();
    // Without a key (cleared environment) the rank is unknown: it goes only at shutdown.
    const bool done = all_done || (key && (rank == live.end() || !rank->second));
    if (done) {  // its rank is done: it goes too
      GANTRY_LOG(INFO, "killing a process its rank left behind")
          .Field("pid", int64_t(c))
          .Field("rank_key", key.value_or("?"));
      if (getpgid(c) == c) kill(-c, SIGKILL);  // its own group (setsid)
      kill(c, SIGKILL);
    }
    ++it;
  }
}

void WorkerAgent::Impl::KillLeftoversOfThisDir() {
  std::vector<pid_t> left;
  for (pid_t p : ProcessesOfWorkerDir(abs_dir)) {
    // Only what a worker that is gone left: a live worker (its lock file removed under it,
    // say) keeps its ranks.
    const std::optional<std::string> owner = EnvOf(p, kWorkerPidEnv);
    const pid_t owner_pid = owner ? pid_t(std::atol(owner->c_str())) : 0;
    if (owner_pid > 0 && owner_pid != getpid() && IsLiveWorker(owner_pid)) continue;
    left.push_back(p);
  }
  for (pid_t p : left) kill(p, SIGKILL);
  if (!left.empty()) {
    GANTRY_LOG(WARNING, "killed processes a previous worker on this directory left running")
        .Field("dir", abs_dir)
        .Field("processes", int64_t(left.size()));
  }
}

void WorkerAgent::Impl::PumpUntil(const std::function<bool()>& done, Clock::time_point until) {
  while (!done() && Clock::now() < until) {
    zmq_pollitem_t item{socket, 0, ZMQ_POLLIN, 0};
    zmq_poll(&item, 1, kPollInterval.count());
    ReceiveAll();
  }
}

void WorkerAgent::Impl::StopAll(std::chrono::milliseconds grace) {
  for (auto& [key, r] : ranks)
    if (r.proc && !r.proc->exited()) r.proc->Stop(grace);
  const auto deadline = Clock::now() + grace + std::chrono::milliseconds(500);
  while (Clock::now() < deadline) {
    Service();  // polls every rank: an exit is recorded, counted and reported as it happens
    bool all = true;
    for (auto& [key, r] : ranks) all = all && (!r.proc || r.proc->exited());
    if (all) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  Service();
  FlushLogs(true);
  Service();  // an exit is reported once its output is out: now, for the last ones
  // What the ranks left behind (reparented here once they died) goes with them: SIGKILL,
  // then reaped, briefly (a worker that exits first would hand them to PID 1).
  const auto orphans_until = Clock::now() + std::chrono::milliseconds(500);
  do {
    ReapOrphans(/*all_done=*/true);
    if (orphans.empty()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  } while (Clock::now() < orphans_until);
}

StatusOr<std::unique_ptr<WorkerAgent>> WorkerAgent::Create(WorkerOptions options) {
  auto impl = std::make_unique<Impl>();
  if (options.worker_id.empty()) options.worker_id = HostName();
  if (options.self_exe.empty()) {
    std::error_code ec;
    options.self_exe = std::filesystem::read_symlink("/proc/self/exe", ec).string();
  }
  if (options.address.empty()) {
    GANTRY_ASSIGN_OR_RETURN(options.address, LocalAddressFor(options.coordinator));
  }
  impl->resources = DetectResources(options.cpu_slots, options.gpus, options.labels);
  if (options.pin_cpus) {
    const StatusOr<std::vector<int>> mask = AffinityCpus();
    const std::vector<int> allowed = mask.ok() ? *mask : std::vector<int>();
    impl->cpu_pool = CpuPool::ForSlots(impl->resources.cpu_slots(), allowed);
    if (!impl->cpu_pool) {
      GANTRY_LOG(WARNING, "cpu pinning off: more CPU slots than CPUs this worker may use")
          .Field("cpu_slots", impl->resources.cpu_slots())
          .Field("cpus", CpuListString(allowed));
    }
  }
  impl->opt = std::move(options);
  {
    std::error_code ec;
    std::filesystem::create_directories(impl->opt.dir, ec);
    if (ec) return ErrnoError("creating worker directory " + impl->opt.dir, ec.value());
    // Canonical: another spelling of the same directory (a trailing '/', a symlink) must
    // find the same leftovers.
    impl->abs_dir = std::filesystem::canonical(impl->opt.dir, ec).string();
    if (ec) return ErrnoError("resolving worker directory " + impl->opt.dir, ec.value());
  }
  // One worker per directory; then whatever a previous one here left (its ranks' children,
  // after a kill -9) is ours to end, and this worker adopts its ranks' orphans from now on.
  GANTRY_ASSIGN_OR_RETURN(impl->dir_lock,
                          LockDirectory(impl->abs_dir, "worker.lock", "worker directory", "worker"));
  impl->KillLeftoversOfThisDir();
  prctl(PR_SET_CHILD_SUBREAPER, 1);
  GANTRY_RETURN_IF_ERROR(impl->StartMetrics());
  return std::unique_ptr<WorkerAgent>(new WorkerAgent(std::move(impl)));
}

WorkerAgent::WorkerAgent(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
WorkerAgent::~WorkerAgent() = default;

int WorkerAgent::metrics_port() const { return impl_->http ? impl_->http->port() : -1; }

Status WorkerAgent::Run(const std::atomic<bool>& stop) {
  Impl& s = *impl_;
  GANTRY_RETURN_IF_ERROR(s.Connect());
  GANTRY_LOG(INFO, "worker started")
      .Field("worker", s.opt.worker_id)
      .Field("coordinator", s.opt.coordinator)
      .Field("address", s.opt.address)
      .Field("cpu_slots", s.resources.cpu_slots())
      .Field("gpus", s.resources.gpus_size())
      .Field("metrics_port", s.http ? s.http->port() : -1);
  while (!stop.load()) {
    std::vector<zmq_pollitem_t> items{{s.socket, 0, ZMQ_POLLIN, 0}};
    for (auto& [key, r] : s.ranks) {
      if (!r.proc) continue;
      if (r.proc->stdout_fd() >= 0) items.push_back({nullptr, r.proc->stdout_fd(), ZMQ_POLLIN, 0});
      if (r.proc->stderr_fd() >= 0) items.push_back({nullptr, r.proc->stderr_fd(), ZMQ_POLLIN, 0});
    }
    zmq_poll(items.data(), static_cast<int>(items.size()), kPollInterval.count());
    s.ReceiveAll();
    s.Service();
    s.UpdateGauges();
    const auto now = Clock::now();
    if (s.registered && now - s.last_hb >= s.interval) {
      s.last_hb = now;
      proto::Envelope hb;
      hb.mutable_heartbeat()->set_worker_id(s.opt.worker_id);
      hb.mutable_heartbeat()->set_epoch(s.epoch);
      for (auto& [key, r] : s.ranks) *hb.mutable_heartbeat()->add_ranks() = r.status;
      s.SendRequest(std::move(hb));
      s.m.heartbeats->Inc();
      s.ResendUnackedExits();
      s.ResendLogs(/*all=*/false);
    }
    // Paranoid-pirate liveness: silence means the coordinator is gone; start afresh.
    const bool silent = s.registered ? now - s.last_rx > s.interval * s.lost_after
                                     : now - s.register_sent > s.opt.register_timeout;
    if (silent && now >= s.reconnect_at) {
      GANTRY_LOG(WARNING, "coordinator unreachable; reconnecting")
          .Field("coordinator", s.opt.coordinator)
          .Field("backoff_ms", s.backoff.count());
      s.reconnect_at = now + s.backoff;
      s.backoff = std::min(s.backoff * 2, s.opt.max_backoff);
      s.m.reconnects->Inc();
      GANTRY_RETURN_IF_ERROR(s.Connect());
    }
  }
  GANTRY_LOG(INFO, "worker stopping")
      .Field("worker", s.opt.worker_id)
      .Field("ranks", s.ranks.size());
  s.stopping = true;  // no more launches
  // Say so first (bounded): the coordinator then places nothing more here, and the ranks'
  // exits (stopped next) fail their attempts once, naming the shutdown, so the restarts go
  // elsewhere instead of to this worker.
  if (s.registered) {
    proto::Envelope leaving;
    leaving.mutable_worker_leaving()->set_worker_id(s.opt.worker_id);
    leaving.mutable_worker_leaving()->set_epoch(s.epoch);
    s.leaving_request = s.SendRequest(std::move(leaving));
    s.PumpUntil([&] { return s.leaving_acked; }, Clock::now() + std::chrono::seconds(1));
  }
  s.StopAll(kShutdownGrace);
  s.UpdateGauges();
  // The last exit reports are queued on the socket, and a process that exits drops what its
  // ZeroMQ context has not sent: wait (bounded) until the coordinator acknowledged them.
  s.PumpUntil([&] { return s.exit_requests.empty() && s.log_requests.empty(); },
              Clock::now() + kShutdownGrace);
  return OkStatus();
}

}  // namespace gantry::worker
