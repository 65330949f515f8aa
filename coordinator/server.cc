// Coordinator loop: the ROUTER socket, dispatch, replies, timers and /metrics.
#include "coordinator/server.h"

#include <unistd.h>
#include <zmq.h>

#include <filesystem>

#include "base/dir_lock.h"
#include "base/http_server.h"
#include "base/logging.h"
#include "base/metrics.h"
#include "coordinator/security.h"
#include "proto/wire.h"

namespace gantry::coordinator {

namespace {
constexpr std::chrono::milliseconds kTickInterval{100};
constexpr int kMaxKvWaitMs = 600000;
const char* const kStates[] = {"PENDING",   "PLACED", "RUNNING",  "RESTARTING",
                               "SUCCEEDED", "FAILED", "CANCELLED"};
}  // namespace

struct Coordinator::Impl {
  CoordinatorOptions opt;
  SystemClock clock;
  std::unique_ptr<JobStore> store;
  std::unique_ptr<WorkerRegistry> registry;
  Rendezvous kv;
  std::unique_ptr<JobManager> manager;
  std::unique_ptr<ZapHandler> zap;
  std::map<std::string, TokenInfo> tokens;
  void* router = nullptr;
  std::string endpoint;
  std::unique_ptr<HttpServer> http;
  SteadyTime last_tick{}, last_counts{};
  MetricsRegistry& metrics = MetricsRegistry::Default();

  int lock_fd = -1;  // flock on <state_dir>/coordinator.lock, held for the process's life

  ~Impl() {
    if (http) http->Stop();
    if (router) zmq_close(router);
    if (lock_fd >= 0) close(lock_fd);
  }
  Status LockStateDir();
  Status Init();
  Status BindRouter();
  void OnFrame(const std::string& identity, const std::string& payload);
  // Returns false when the reply is deferred (a parked KV Get).
  StatusOr<bool> Dispatch(const std::string& identity, const proto::Envelope& in,
                          proto::Envelope& out);
  StatusOr<std::string> TenantOf(const proto::Envelope& in, bool* admin);
  void Send(const std::string& identity, const proto::Envelope& env);
  void Flush();
  void Timers();
  void UpdateMetrics();
};

// One coordinator per state directory: a second one on the same job store (say, `gantry up`
// run again while the first cluster still runs) would place every job a second time.
Status Coordinator::Impl::LockStateDir() {
  GANTRY_ASSIGN_OR_RETURN(lock_fd, LockDirectory(opt.state_dir, "coordinator.lock",
                                                 "state directory", "coordinator"));
  return OkStatus();
}

Status Coordinator::Impl::Init() {
  std::error_code ec;
  std::filesystem::create_directories(opt.state_dir, ec);
  if (ec) return ErrnoError("creating state directory " + opt.state_dir, ec.value());
  GANTRY_RETURN_IF_ERROR(LockStateDir());
  GANTRY_ASSIGN_OR_RETURN(store, JobStore::Open(opt.state_dir + "/gantry.db"));
  store->set_log_limit(uint64_t(std::max(0, opt.max_job_log_mb)) << 20);
  const bool loopback = wire::IsLoopbackEndpoint(opt.bind);
  if (!loopback &&
      (opt.secret_key_file.empty() || opt.allow_list.empty() || opt.tokens_file.empty()))
    return InvalidArgumentError(
        "refusing to listen on " + opt.bind +
        " without security: a non-loopback address needs "
        "--key (CURVE secret key), --allow (allow-listed public keys) and --tokens (user "
        "tokens); create keys with `gantry keys gen`");
  if (!opt.tokens_file.empty()) {
    GANTRY_ASSIGN_OR_RETURN(tokens, ReadTokens(opt.tokens_file));
  }
  if (!opt.secret_key_file.empty()) {
    if (opt.allow_list.empty())
      return InvalidArgumentError("--key needs --allow: the public keys allowed to connect");
    GANTRY_ASSIGN_OR_RETURN(auto keys, wire::ReadAllowList(opt.allow_list));
    GANTRY_ASSIGN_OR_RETURN(zap, ZapHandler::Start({keys.begin(), keys.end()}));
  }
  GANTRY_RETURN_IF_ERROR(BindRouter());
  registry =
      std::make_unique<WorkerRegistry>(&clock, opt.heartbeat_interval, opt.lost_after_missed);
  ManagerOptions mo = opt.manager;
  mo.coordinator_endpoint = opt.advertise.empty() ? endpoint : opt.advertise;
  manager = std::make_unique<JobManager>(store.get(), registry.get(), &kv, &clock, mo);
  GANTRY_RETURN_IF_ERROR(manager->Recover());
  if (opt.metrics_port >= 0) {
    GANTRY_ASSIGN_OR_RETURN(http, StartMetricsServer(opt.metrics_host, opt.metrics_port, metrics));
  }
  GANTRY_LOG(INFO, "coordinator listening")
      .Field("endpoint", endpoint)
      .Field("state_dir", opt.state_dir)
      .Field("curve", zap != nullptr)
      .Field("tokens", !tokens.empty())
      .Field("metrics_port", http ? http->port() : -1);
  return OkStatus();
}

Status Coordinator::Impl::BindRouter() {
  router = zmq_socket(wire::Context(), ZMQ_ROUTER);
  if (!router) return wire::ZmqError("creating the ROUTER socket");
  const int linger = 0, mandatory = 1;
  const int64_t max_size = wire::kHardMaxMessageBytes;
  zmq_setsockopt(router, ZMQ_LINGER, &linger, sizeof(linger));
  zmq_setsockopt(router, ZMQ_ROUTER_MANDATORY, &mandatory, sizeof(mandatory));
  zmq_setsockopt(router, ZMQ_MAXMSGSIZE, &max_size, sizeof(max_size));
  if (zap) {
    const int server = 1;
    GANTRY_ASSIGN_OR_RETURN(std::string secret, wire::ReadKeyFile(opt.secret_key_file));
    if (zmq_setsockopt(router, ZMQ_CURVE_SERVER, &server, sizeof(server)) != 0 ||
        zmq_setsockopt(router, ZMQ_CURVE_SECRETKEY, secret.data(), 40) != 0 ||
        zmq_setsockopt(router, ZMQ_ZAP_DOMAIN, "gantry", 6) != 0)
      return wire::ZmqError("enabling CURVE on the coordinator socket");
  }
  GANTRY_RETURN_IF_ERROR(wire::CheckEndpoint(opt.bind, "--bind"));
  if (!opt.advertise.empty()) {
    GANTRY_RETURN_IF_ERROR(wire::CheckEndpoint(opt.advertise, "--advertise"));
  }
  std::string bind = opt.bind;
  if (bind.size() > 2 && bind.substr(bind.size() - 2) == ":0")
    bind.replace(bind.size() - 1, 1, "*");
  if (zmq_bind(router, bind.c_str()) != 0)
    return wire::ZmqError("binding the coordinator to " + opt.bind +
                          " (another coordinator on this port? pick one with --bind)");
  char last[256] = {0};
  size_t len = sizeof(last);
  zmq_getsockopt(router, ZMQ_LAST_ENDPOINT, last, &len);
  endpoint = last;
  if (endpoint.find("0.0.0.0") != std::string::npos && opt.advertise.empty())
    return InvalidArgumentError("bound to a wildcard address (" + endpoint +
                                "): pass --advertise tcp://HOST:PORT so ranks can reach it");
  return OkStatus();
}

void Coordinator::Impl::Send(const std::string& identity, const proto::Envelope& env) {
  Status st = wire::Send(router, wire::Encode(env), &identity, /*dont_wait=*/true);
  if (!st.ok())
    GANTRY_LOG(WARNING, "send failed").Field("body", wire::BodyName(env)).Field("error", st);
}

StatusOr<std::string> Coordinator::Impl::TenantOf(const proto::Envelope& in, bool* admin) {
  *admin = tokens.empty();
  if (tokens.empty()) return std::string();
  auto it = tokens.find(in.token());
  if (it == tokens.end()) {
    metrics
        .GetCounter("gantry_coordinator_rejected_total", "Requests refused (auth, size, format)",
                    {{"reason", "token"}})
        .Inc();
    return UnauthenticatedError(std::string(in.token().empty() ? "no" : "an unknown") +
                                " user token: pass --token or set GANTRY_TOKEN to a token from "
                                "the coordinator's tokens file");
  }
  *admin = it->second.admin;
  return it->second.tenant;
}

void Coordinator::Impl::OnFrame(const std::string& identity, const std::string& payload) {
  metrics.GetCounter("gantry_coordinator_messages_total", "Messages received").Inc();
  auto in = wire::Decode(payload.data(), payload.size(), wire::MaxMessageBytes());
  if (!in.ok()) {
    metrics
        .GetCounter("gantry_coordinator_rejected_total", "Requests refused (auth, size, format)",
                    {{"reason", "malformed"}})
        .Inc();
    GANTRY_LOG(WARNING, "rejected message")
        .Field("bytes", payload.size())
        .Field("error", in.status());
    Send(identity,
         wire::ErrorReply(wire::PeekRequestId(payload.data(), payload.size()), in.status()));
    return;
  }
  proto::Envelope out;
  out.set_version(wire::kProtocolVersion);
  out.set_request_id(in->request_id());
  auto replied = Dispatch(identity, *in, out);
  if (!replied.ok()) {
    if (in->request_id() != 0) Send(identity, wire::ErrorReply(in->request_id(), replied.status()));
    return;
  }
  if (*replied && in->request_id() != 0) Send(identity, out);
}

StatusOr<bool> Coordinator::Impl::Dispatch(const std::string& identity, const proto::Envelope& in,
                                           proto::Envelope& out) {
  using E = proto::Envelope;
  bool admin = false;
  switch (in.body_case()) {
    case E::kSubmitJob: {
      GANTRY_ASSIGN_OR_RETURN(std::string tenant, TenantOf(in, &admin));
      GANTRY_ASSIGN_OR_RETURN(std::string id, manager->Submit(in.submit_job(), tenant));
      out.mutable_submit_job_reply()->set_job_id(id);
      return true;
    }
    case E::kCancelJob: {
      GANTRY_ASSIGN_OR_RETURN(std::string tenant, TenantOf(in, &admin));
      GANTRY_RETURN_IF_ERROR(manager->Cancel(in.cancel_job().job_id(), admin ? "" : tenant));
      out.mutable_ack();
      return true;
    }
    case E::kGetJob: {
      GANTRY_ASSIGN_OR_RETURN(*out.mutable_job_info(),
                              manager->Info(in.get_job().job_id(), in.get_job().describe()));
      return true;
    }
    case E::kListJobs: {
      GANTRY_ASSIGN_OR_RETURN(*out.mutable_job_list(),
                              manager->List(in.list_jobs().all(), in.list_jobs().limit()));
      return true;
    }
    case E::kGetLogs: {
      GANTRY_ASSIGN_OR_RETURN(*out.mutable_log_batch(), manager->Logs(in.get_logs()));
      return true;
    }
    case E::kListWorkers: {
      for (const auto& [id, w] : registry->workers()) {
        proto::WorkerInfo* wi = out.mutable_worker_list()->add_workers();
        wi->set_worker_id(id);
        wi->set_hostname(w.hostname);
        wi->set_address(w.address);
        wi->set_state(w.lost ? "LOST" : "READY");
        *wi->mutable_resources() = w.resources;
        wi->set_cpus_used(w.cpus_used);
        wi->set_gpus_used(static_cast<int>(w.gpus_used.size()));
        wi->set_running_ranks(w.ranks_running);
        wi->set_last_heartbeat_ms(
            wire::NowUnixMs() -
            std::chrono::duration_cast<std::chrono::milliseconds>(clock.Now() - w.last_seen)
                .count());
      }
      out.mutable_worker_list();
      return true;
    }
    case E::kRegisterWorker: {
      const proto::RegisterWorker& reg = in.register_worker();
      if (reg.worker_id().empty()) return InvalidArgumentError("register_worker needs a worker_id");
      registry->Register(reg, identity);
      manager->OnWorkerRegistered(reg);
      GANTRY_LOG(INFO, "worker registered")
          .Field("worker", reg.worker_id())
          .Field("address", reg.address())
          .Field("cpu_slots", reg.resources().cpu_slots())
          .Field("gpus", reg.resources().gpus_size())
          .Field("ranks_reported", reg.ranks_size());
      out.mutable_register_reply()->set_heartbeat_interval_ms(
          static_cast<int>(opt.heartbeat_interval.count()));
      out.mutable_register_reply()->set_lost_after_missed(opt.lost_after_missed);
      return true;
    }
    case E::kHeartbeat: {
      bool stale = false;
      const bool known = registry->Heartbeat(in.heartbeat().worker_id(), identity,
                                             in.heartbeat().epoch(), &stale);
      if (known && !stale) manager->OnHeartbeat(in.heartbeat());
      out.mutable_heartbeat_reply()->set_registered(known);
      return true;
    }
    case E::kWorkerLeaving: {
      const proto::WorkerLeaving& l = in.worker_leaving();
      // Nothing more is placed there; its ranks' exits (it stops them next) fail their
      // attempts once, naming the shutdown, and the restarts go elsewhere.
      if (registry->MarkLeaving(l.worker_id(), l.epoch())) {
        GANTRY_LOG(INFO, "worker leaving").Field("worker", l.worker_id());
      }
      out.mutable_ack();
      return true;
    }
    case E::kRankStarted:
      registry->Touch(identity);
      manager->OnRankStarted(in.rank_started().worker_id(), in.rank_started().rank());
      out.mutable_ack();
      return true;
    case E::kRankExited:
      registry->Touch(identity);
      manager->OnRankExited(in.rank_exited().worker_id(), in.rank_exited().rank());
      out.mutable_ack();
      return true;
    case E::kRankLogs:
      registry->Touch(identity);
      manager->OnRankLogs(in.rank_logs());
      out.mutable_ack();
      return true;
    case E::kKvSet:
    case E::kKvGet:
    case E::kKvAdd: {
      if (!manager->ValidToken(in.job_id(), in.attempt(), in.token()))
        return PermissionDeniedError("rendezvous request for job " + in.job_id() + " attempt " +
                                     std::to_string(in.attempt()) +
                                     " with a token that is not that attempt's (GANTRY_TOKEN)");
      const std::string scope = Rendezvous::Scope(in.job_id(), in.attempt());
      std::vector<RoutedReply> wake;
      if (in.has_kv_set()) {
        GANTRY_RETURN_IF_ERROR(kv.Set(scope, in.kv_set().key(), in.kv_set().value(), wake));
        out.mutable_ack();
      } else if (in.has_kv_add()) {
        GANTRY_ASSIGN_OR_RETURN(int64_t v,
                                kv.Add(scope, in.kv_add().key(), in.kv_add().delta(), wake));
        out.mutable_kv_value()->set_number(v);
      } else if (auto v = kv.Get(scope, in.kv_get().key())) {
        out.mutable_kv_value()->set_value(*v);
      } else {
        const int wait = std::clamp(in.kv_get().timeout_ms(), 0, kMaxKvWaitMs);
        GANTRY_RETURN_IF_ERROR(kv.Park(scope, in.kv_get().key(), identity, in.request_id(),
                                       clock.Now() + std::chrono::milliseconds(wait)));
        return false;
      }
      for (auto& r : wake) Send(r.identity, r.env);
      return true;
    }
    default:
      return InvalidArgumentError("'" + wire::BodyName(in) +
                                  "' is not a request the coordinator accepts");
  }
}

void Coordinator::Impl::Flush() {
  for (auto& o : manager->TakeOutbox()) {
    WorkerEntry* w = registry->Find(o.worker_id);
    if (!w || w->lost) continue;  // it re-registers and learns the truth then
    Send(w->identity, o.env);
  }
  for (auto& r : manager->TakeKvReplies()) Send(r.identity, r.env);
}

void Coordinator::Impl::Timers() {
  for (const std::string& id : registry->ExpireLost()) {
    GANTRY_LOG(WARNING, "worker lost").Field("worker", id);
    manager->OnWorkerLost(id);
  }
  manager->Tick();
  Flush();
  UpdateMetrics();
}

void Coordinator::Impl::UpdateMetrics() {
  ManagerStats& st = manager->stats();
  auto& wait = metrics.GetHistogram("gantry_coordinator_queue_wait_seconds",
                                    "Time from submit (or restart) to placement", {},
                                    ExponentialBuckets(0.01, 4, 10));
  for (double v : st.queue_wait_s) wait.Observe(v);
  st.queue_wait_s.clear();
  auto& place = metrics.GetHistogram("gantry_coordinator_placement_seconds",
                                     "Scheduling pass duration when it placed gangs", {},
                                     ExponentialBuckets(0.0001, 4, 10));
  for (double v : st.placement_s) place.Observe(v);
  st.placement_s.clear();
  metrics.GetGauge("gantry_coordinator_restarts", "Gang restarts since this coordinator started")
      .Set(static_cast<double>(st.restarts));
  const SteadyTime now = clock.Now();
  if (now - last_counts > std::chrono::seconds(1)) {
    last_counts = now;
    auto counts = store->CountByState();
    if (counts.ok())
      for (const char* s : kStates)
        metrics.GetGauge("gantry_coordinator_jobs", "Jobs by state", {{"state", s}})
            .Set(static_cast<double>(counts->count(s) ? counts->at(s) : 0));
  }
  int ready = 0, lost = 0, gpus = 0, gpus_used = 0, cpus = 0, cpus_used = 0;
  for (const auto& [id, w] : registry->workers()) {
    (w.lost ? lost : ready)++;
    if (w.lost) continue;
    gpus += w.resources.gpus_size();
    gpus_used += static_cast<int>(w.gpus_used.size());
    cpus += w.resources.cpu_slots();
    cpus_used += w.cpus_used;
  }
  metrics.GetGauge("gantry_coordinator_workers", "Workers by state", {{"state", "ready"}})
      .Set(ready);
  metrics.GetGauge("gantry_coordinator_workers", "Workers by state", {{"state", "lost"}}).Set(lost);
  metrics.GetGauge("gantry_coordinator_gpus", "GPUs of ready workers", {{"state", "used"}})
      .Set(gpus_used);
  metrics.GetGauge("gantry_coordinator_gpus", "GPUs of ready workers", {{"state", "free"}})
      .Set(gpus - gpus_used);
  metrics
      .GetGauge("gantry_coordinator_cpu_slots", "CPU slots of ready workers", {{"state", "used"}})
      .Set(cpus_used);
  metrics
      .GetGauge("gantry_coordinator_cpu_slots", "CPU slots of ready workers", {{"state", "free"}})
      .Set(cpus - cpus_used);
}

StatusOr<std::unique_ptr<Coordinator>> Coordinator::Create(CoordinatorOptions options) {
  auto impl = std::make_unique<Impl>();
  impl->opt = std::move(options);
  GANTRY_RETURN_IF_ERROR(impl->Init());
  return std::unique_ptr<Coordinator>(new Coordinator(std::move(impl)));
}

Coordinator::Coordinator(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Coordinator::~Coordinator() = default;
std::string Coordinator::endpoint() const { return impl_->endpoint; }
int Coordinator::metrics_port() const { return impl_->http ? impl_->http->port() : -1; }

Status Coordinator::Run(const std::atomic<bool>& stop) {
  Impl& s = *impl_;
  while (!stop.load()) {
    zmq_pollitem_t item{s.router, 0, ZMQ_POLLIN, 0};
    const int n = zmq_poll(&item, 1, static_cast<long>(kTickInterval.count()));
    if (n < 0 && zmq_errno() != EINTR) return wire::ZmqError("polling the coordinator socket");
    for (int budget = 0; n > 0 && budget < 256; ++budget) {
      std::string frames[3];
      int count = 0, more = 1;
      while (more) {
        zmq_msg_t m;
        zmq_msg_init(&m);
        if (zmq_msg_recv(&m, s.router, ZMQ_DONTWAIT) < 0) {
          zmq_msg_close(&m);
          more = -1;
          break;
        }
        if (count < 3) frames[count].assign(static_cast<char*>(zmq_msg_data(&m)), zmq_msg_size(&m));
        ++count;
        more = zmq_msg_more(&m);
        zmq_msg_close(&m);
      }
      if (more < 0 && count == 0) break;  // drained
      if (count == 2) {
        s.OnFrame(frames[0], frames[1]);
      } else if (count >= 1) {
        // The reply names the request when its first body frame has an id (frames[1]).
        const uint64_t id =
            count >= 2 ? wire::PeekRequestId(frames[1].data(), frames[1].size()) : 0;
        s.Send(frames[0],
               wire::ErrorReply(id, InvalidArgumentError("expected one frame per message, got " +
                                                         std::to_string(count - 1))));
      }
      s.manager->Tick();
      s.Flush();
    }
    if (s.clock.Now() - s.last_tick >= kTickInterval) {
      s.last_tick = s.clock.Now();
      s.Timers();
    }
  }
  GANTRY_LOG(INFO, "coordinator stopping").Field("endpoint", s.endpoint);
  return OkStatus();
}

}  // namespace gantry::coordinator
