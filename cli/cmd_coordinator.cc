// Cluster commands: up, coordinator, worker, submit, status, list, describe, logs, cancel,
// workers, keys. Thin: flags -> coordinator/ and worker/ libraries -> text or `-o json`.
#include <google/protobuf/util/json_util.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <optional>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "base/job_spec.h"
#include "base/logging.h"
#include "base/progress.h"
#include "cli/command.h"
#include "coordinator/client.h"
#include "coordinator/local_cluster.h"
#include "coordinator/server.h"
#include "proto/wire.h"
#include "worker/agent.h"

namespace gantry::cli {
namespace {

using coordinator::CoordinatorClient;
std::atomic<bool> g_stop{false};

void InstallStopHandlers() {
  struct sigaction sa {};
  sa.sa_handler = [](int) { g_stop = true; };
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
}

// Flags every client command shares.
struct ClientFlags {
  std::string coordinator, dir = ".gantry", token, server_key, client_key, output = "text";
  int timeout_ms = 10000;
  void Add(CLI::App& app, bool with_output = true) {
    app.add_option("--coordinator", coordinator,
                   "coordinator endpoint (default: $GANTRY_COORDINATOR, <dir>/coordinator, "
                   "tcp://127.0.0.1:7450)");
    app.add_option("--dir", dir, "local cluster directory written by `gantry up`")
        ->capture_default_str();
    app.add_option("--token", token, "user token (default: $GANTRY_TOKEN)");
    app.add_option("--server-key", server_key, "coordinator public key file (CURVE)");
    app.add_option("--client-key", client_key, "this client's secret key file; NAME.pub beside it");
    app.add_option("--timeout-ms", timeout_ms, "per-request timeout")
        ->capture_default_str()
        ->check(CLI::Range(1, 24 * 3600 * 1000));
    if (with_output)
      app.add_option("-o,--output", output, "text | json")->check(CLI::IsMember({"text", "json"}));
  }
  StatusOr<std::unique_ptr<CoordinatorClient>> Connect() const {
    wire::ChannelOptions o;
    o.endpoint = coordinator::ResolveCoordinatorEndpoint(coordinator, dir);
    o.timeout = std::chrono::milliseconds(timeout_ms);
    o.token = token;
    if (o.token.empty())
      if (const char* t = std::getenv("GANTRY_TOKEN")) o.token = t;
    std::string skey = server_key, ckey = client_key;
    if (skey.empty() && ckey.empty()) {  // inside a rank: the files its worker uses
      if (const char* e = std::getenv(wire::kServerKeyEnv)) skey = e;
      if (const char* e = std::getenv(wire::kClientKeyEnv)) ckey = e;
    }
    GANTRY_RETURN_IF_ERROR(wire::LoadCurveKeyFiles(skey, ckey, &o));
    return CoordinatorClient::Connect(o);
  }
  bool json() const { return output == "json"; }
};

std::string ToJson(const google::protobuf::Message& m) {
  std::string out;
  google::protobuf::util::JsonPrintOptions opts;
  opts.preserve_proto_field_names = true;
  opts.always_print_primitive_fields = true;
  (void)google::protobuf::util::MessageToJsonString(m, &out, opts);
  return out;
}

std::string Ago(int64_t ms) {
  if (ms <= 0) return "-";
  const int64_t s = (wire::NowUnixMs() - ms) / 1000;
  return s < 120    ? std::to_string(s) + "s ago"
         : s < 7200 ? std::to_string(s / 60) + "m ago"
                    : std::to_string(s / 3600) + "h ago";
}

void PrintJobRow(const proto::JobInfo& j) {
  std::string what = j.state() == "PENDING" ? j.waiting() : j.error();
  if (j.progress().step() > 0)
    what = "step " + std::to_string(j.progress().step()) +
           (j.progress().total_steps() ? "/" + std::to_string(j.progress().total_steps()) : "") +
           " loss " + std::to_string(j.progress().loss());
  std::printf("%-28s %-10s %-8s %-10s %5d %7d  %-9s %s\n", j.job_id().c_str(), j.state().c_str(),
              j.kind().c_str(), j.tenant().c_str(), j.ranks(), j.attempt() + 1,
              Ago(j.submitted_ms()).c_str(), what.c_str());
}
void PrintJobHeader() {
  std::printf("%-28s %-10s %-8s %-10s %5s %7s  %-9s %s\n", "JOB", "STATE", "KIND", "TENANT",
              "RANKS", "ATTEMPT", "SUBMITTED", "DETAIL");
}

void PrintDescribe(const proto::JobInfo& j) {
  std::printf(
      "Job:        %s (%s)\nState:      %s\nKind:       %s\nTenant:     %s, priority %s\n"
      "Resources:  %d rank(s) x %d GPU, %d CPU\nAttempt:    %d of %d\n",
      j.job_id().c_str(), j.name().c_str(), j.state().c_str(), j.kind().c_str(), j.tenant().c_str(),
      j.priority().c_str(), j.ranks(), j.gpus_per_rank(), j.cpus_per_rank(), j.attempt() + 1,
      j.max_restarts() + 1);
  if (!j.waiting().empty()) std::printf("Waiting:    %s\n", j.waiting().c_str());
  // While an attempt runs, the error is an earlier attempt's: say so.
  if (!j.error().empty()) {
    const bool earlier = j.state() == "RUNNING" || j.state() == "PLACED" || j.state() == "PENDING";
    std::printf("%s%s\n", earlier ? "Last error: " : "Error:      ", j.error().c_str());
  }
  if (j.progress().step() > 0)
    std::printf("Progress:   step %lld/%lld, loss %.4f, %.1f %s\n",
                static_cast<long long>(j.progress().step()),
                static_cast<long long>(j.progress().total_steps()), j.progress().loss(),
                j.progress().throughput(), j.progress().throughput_unit().c_str());
  std::printf("Ranks:\n");
  for (const auto& r : j.rank_info()) {
    std::string placed;
    for (int g : r.gpu_indices()) placed += (placed.empty() ? "  gpus " : ",") + std::to_string(g);
    if (!r.cpus().empty()) placed += "  cpus " + r.cpus();
    // An exit code only for ranks that exited ("exit 0" on a running rank read as done).
    const std::string exit_code =
        r.state() == "EXITED" ? "exit " + std::to_string(r.exit_code()) : std::string();
    std::printf("  %3d  %-16s %-8s pid %-8d %-8s%s\n", r.rank(), r.worker_id().c_str(),
                r.state().c_str(), r.pid(), exit_code.c_str(), placed.c_str());
  }
  if (j.events_size() > 0) std::printf("Events:\n");
  for (const auto& e : j.events()) {
    const std::time_t t = e.time_ms() / 1000;
    char buf[32];
    std::strftime(buf, sizeof(buf), "%H:%M:%S", std::localtime(&t));
    std::printf("  %s.%03lld  attempt %d  %-10s %s\n", buf,
                static_cast<long long>(e.time_ms() % 1000), e.attempt() + 1, e.state().c_str(),
                e.reason().c_str());
  }
}

bool Terminal(const std::string& s) {
  return s == "SUCCEEDED" || s == "FAILED" || s == "CANCELLED";
}

// `submit --wait`: state changes as lines, a progress bar for training, exit code = result.
int WaitForJob(CoordinatorClient& client, const std::string& id, bool json) {
  std::string last_state, last_waiting;
  int last_attempt = -1;
  std::unique_ptr<Progress> bar;
  const auto t0 = std::chrono::steady_clock::now();
  for (;;) {
    auto info = client.GetJob(id);
    if (!info.ok()) return ReportError(info.status());
    // A pending job also says why it waits (no host can hold it, quota, reservation) and
    // again when that changes: a bare "PENDING" forever looked like a hang.
    const std::string waiting = info->state() == "PENDING" ? info->waiting() : "";
    if (info->state() != last_state || info->attempt() != last_attempt ||
        waiting != last_waiting) {
      if (bar) bar->Finish();
      bar.reset();
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      if (json) {
        std::cout << nlohmann::json{{"job", id},
                                    {"state", info->state()},
                                    {"attempt", info->attempt()},
                                    {"t_s", s},
                                    {"detail",
                                     info->state() == "PENDING" ? info->waiting() : info->error()}}
                  << std::endl;
      } else {
        const std::string detail =
            info->state() == "PENDING" ? waiting
            : info->state() == "RUNNING" ? std::string()
                                         : info->error();
        std::fprintf(stderr, "[%6.2fs] %s: %s (attempt %d)%s%s\n", s, id.c_str(),
                     info->state().c_str(), info->attempt() + 1, detail.empty() ? "" : ": ",
                     detail.c_str());
      }
      last_waiting = waiting;
      last_state = info->state();
      last_attempt = info->attempt();
    }
    const auto& p = info->progress();
    if (!json && info->state() == "RUNNING" && p.step() > 0) {
      if (!bar) {
        ProgressOptions po;
        po.label = id;
        po.total = p.total_steps();
        po.unit = "steps";
        bar = std::make_unique<Progress>(po);
      }
      bar->Update(p.step());
      bar->SetField("loss", p.loss());
      if (p.throughput() > 0) bar->SetField(p.throughput_unit(), p.throughput());
    }
    if (Terminal(info->state())) {
      if (bar) bar->Finish();
      return info->state() == "SUCCEEDED" ? kExitOk : kExitFailure;
    }
    if (g_stop) return kExitFailure;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
}

CommandRegistration kCoordinator(
    "coordinator", "Run the coordinator (job queue, scheduler, API)",
    [](CLI::App& app) -> CommandHandler {
      auto o = std::make_shared<coordinator::CoordinatorOptions>();
      auto heartbeat_ms = std::make_shared<int>(1000);
      auto quotas = std::make_shared<std::vector<std::string>>();
      app.add_option("--bind", o->bind, "ZeroMQ endpoint to listen on")->capture_default_str();
      app.add_option("--advertise", o->advertise, "endpoint ranks use to reach the coordinator");
      app.add_option("--dir", o->state_dir, "state directory (SQLite job store)")
          ->capture_default_str();
      app.add_option("--heartbeat-ms", *heartbeat_ms, "worker heartbeat interval")
          ->capture_default_str()
          ->check(CLI::Range(10, 3600 * 1000));
      app.add_option("--lost-after", o->lost_after_missed,
                     "missed heartbeats before a worker is lost")
          ->capture_default_str()
          ->check(CLI::Range(2, 100000));
      app.add_option("--key", o->secret_key_file, "CURVE secret key file (enables encryption)");
      app.add_option("--allow", o->allow_list, "allowed public keys: directory of *.pub or a file");
      app.add_option("--tokens", o->tokens_file, "user tokens file: 'TOKEN TENANT [admin]' lines");
      app.add_option("--metrics-port", o->metrics_port, "serve /metrics on this port (0: any)")
          ->check(CLI::Range(-1, 65535));
      app.add_option("--metrics-host", o->metrics_host, "address for /metrics")
          ->capture_default_str();
      app.add_option("--quota", *quotas, "tenant GPU quota, TENANT=GPUS (repeatable)");
      app.add_option("--max-job-log-mb", o->max_job_log_mb,
                     "stored output per job; past it the oldest lines are deleted (0: no limit)")
          ->capture_default_str()
          ->check(CLI::Range(0, 1 << 20));
      app.add_option("--topology-label", o->manager.scheduling.topology_key,
                     "worker label that groups hosts (gangs stay inside one value)")
          ->capture_default_str();
      return [o, heartbeat_ms, quotas]() -> int {
        o->heartbeat_interval = std::chrono::milliseconds(*heartbeat_ms);
        for (const std::string& q : *quotas) {
          const size_t eq = q.find('=');
          if (eq == std::string::npos)
            return ReportError(InvalidArgumentError("--quota " + q + ": expected TENANT=GPUS"));
          const std::string tenant = q.substr(0, eq), gpus = q.substr(eq + 1);
          char* end = nullptr;
          const long n = std::strtol(gpus.c_str(), &end, 10);
          if (tenant.empty() || gpus.empty() || *end != '\0' || n < 0 || n > 1000000) {
            return ReportError(InvalidArgumentError(
                "--quota " + q + ": expected TENANT=GPUS with GPUS a whole number >= 0"));
          }
          o->manager.scheduling.tenant_gpu_quota[tenant] = int(n);
        }
        InstallStopHandlers();
        auto c = coordinator::Coordinator::Create(*o);
        if (!c.ok()) return ReportError(c.status());
        return ExitCodeFor((*c)->Run(g_stop));
      };
    });

CommandRegistration kWorker(
    "worker", "Run a worker agent that launches ranks on this host",
    [](CLI::App& app) -> CommandHandler {
      auto o = std::make_shared<worker::WorkerOptions>();
      auto labels = std::make_shared<std::vector<std::string>>();
      auto keys = std::make_shared<std::pair<std::string, std::string>>();
      app.add_option("--coordinator", o->coordinator, "coordinator endpoint")
          ->capture_default_str();
      app.add_option("--id", o->worker_id, "worker id (default: hostname)");
      app.add_option("--address", o->address, "address peers use to reach ranks on this host");
      app.add_option("--dir", o->dir, "working directory for rank files")->capture_default_str();
      app.add_option("--cpus", o->cpu_slots, "CPU slots to offer (0: usable cores)")
          ->check(CLI::Range(0, 1 << 20));
      app.add_option("--gpus", o->gpus, "GPUs to offer (-1: detect)")->check(CLI::Range(-1, 4096));
      app.add_flag("--pin-cpus", o->pin_cpus,
                   "pin each rank to cpus_per_rank cores of its own (one worker per host)");
      app.add_option("--label", *labels, "KEY=VALUE label, e.g. rack=r1 (repeatable)");
      app.add_option("--server-key", keys->first, "coordinator public key file (CURVE)");
      app.add_option("--key", keys->second, "this worker's secret key file; NAME.pub beside it");
      app.add_option("--metrics-port", o->metrics_port,
                     "serve Prometheus /metrics on this port (0: any free port, -1: off)")
          ->capture_default_str()
          ->check(CLI::Range(-1, 65535));
      app.add_option("--metrics-host", o->metrics_host, "address for /metrics")
          ->capture_default_str();
      return [o, labels, keys]() -> int {
        for (const std::string& l : *labels) {
          const size_t eq = l.find('=');
          if (eq == std::string::npos)
            return ReportError(InvalidArgumentError("--label " + l + ": expected KEY=VALUE"));
          o->labels[l.substr(0, eq)] = l.substr(eq + 1);
        }
        wire::ChannelOptions curve;
        if (Status st = wire::LoadCurveKeyFiles(keys->first, keys->second, &curve); !st.ok())
          return ReportError(st);
        o->server_public_key = curve.server_public_key;
        o->secret_key = curve.secret_key;
        o->public_key = curve.public_key;
        if (!keys->second.empty()) {  // ranks reach the coordinator's KV with the same keys
          std::error_code ec;
          o->server_key_file = std::filesystem::absolute(keys->first, ec).string();
          o->key_file = std::filesystem::absolute(keys->second, ec).string();
        }
        InstallStopHandlers();
        auto w = worker::WorkerAgent::Create(*o);
        if (!w.ok()) return ReportError(w.status());
        return ExitCodeFor((*w)->Run(g_stop));
      };
    });

CommandRegistration kUp(
    "up", "Start a local cluster: coordinator + N workers (Ctrl-C stops all)",
    [](CLI::App& app) -> CommandHandler {
      auto o = std::make_shared<coordinator::LocalClusterOptions>();
      app.add_option("--workers", o->workers, "workers to start")
          ->capture_default_str()
          ->check(CLI::Range(1, 1024));
      app.add_option("--dir", o->dir, "state, logs and worker directories")->capture_default_str();
      app.add_option("--port", o->port, "coordinator port on 127.0.0.1 (0: any)")
          ->capture_default_str()
          ->check(CLI::Range(0, 65535));
      app.add_option("--cpus-per-worker", o->cpus_per_worker, "CPU slots per worker (0: cores)")
          ->check(CLI::Range(0, 1 << 20));
      app.add_option("--gpus-per-worker", o->gpus_per_worker, "GPUs per worker (-1: detect)")
          ->check(CLI::Range(-1, 4096));
      app.add_option("--metrics-port", o->metrics_port, "coordinator /metrics port (-1: off)")
          ->check(CLI::Range(-1, 65535));
      return [o]() -> int {
        InstallStopHandlers();
        coordinator::LocalCluster cluster(*o);
        if (Status st = cluster.Start(); !st.ok()) return ReportError(st);
        std::printf(
            "gantry: local cluster up: coordinator %s, %d worker(s), state in %s "
            "(logs in %s/logs). Ctrl-C stops it.\n",
            cluster.endpoint().c_str(), o->workers, o->dir.c_str(), o->dir.c_str());
        std::fflush(stdout);
        while (!g_stop) {
          if (auto dead = cluster.Dead(); !dead.empty()) {
            cluster.Stop();
            return ReportError(
                UnavailableError("local cluster: " + dead[0] + "; see " + o->dir + "/logs/"));
          }
          std::this_thread::sleep_for(std::chrono::milliseconds(200));
        }
        cluster.Stop();
        std::printf("gantry: local cluster stopped\n");
        return kExitOk;
      };
    });

CommandRegistration kSubmit(
    "submit", "Submit a job spec (YAML); --wait follows it to the end",
    [](CLI::App& app) -> CommandHandler {
      auto f = std::make_shared<ClientFlags>();
      auto file = std::make_shared<std::string>();
      auto wait = std::make_shared<bool>(false);
      app.add_option("spec", *file, "job spec YAML")->required();
      app.add_flag("--wait", *wait, "wait for the result (exit code 0 only if it succeeds)");
      f->Add(app);
      return [f, file, wait]() -> int {
        // Checked here first: a bad spec is named with its line even when no coordinator runs
        // (the coordinator checks it again; its version of the rules decides).
        // The same bytes are checked here and sent (read once: a pipe reads only once).
        StatusOr<std::string> text = ReadJobSpecFile(*file);
        if (!text.ok()) return ReportError(text.status());
        StatusOr<JobSpec> spec = ParseJobSpec(*text, *file);
        if (!spec.ok()) return ReportError(spec.status());
        auto client = f->Connect();
        if (!client.ok()) return ReportError(client.status());
        std::error_code ec;
        auto id = (*client)->Submit(*text, *file, std::filesystem::current_path(ec).string());
        if (!id.ok()) return ReportError(id.status());
        if (f->json())
          std::cout << nlohmann::json{{"job", *id}} << std::endl;
        else
          std::printf("%s\n", id->c_str());
        std::fflush(stdout);
        if (!*wait) return kExitOk;
        InstallStopHandlers();
        return WaitForJob(**client, *id, f->json());
      };
    });

CommandRegistration kStatus("status", "Show one job, or every active job",
                            [](CLI::App& app) -> CommandHandler {
                              auto f = std::make_shared<ClientFlags>();
                              auto id = std::make_shared<std::string>();
                              app.add_option("job", *id, "job id");
                              f->Add(app);
                              return [f, id]() -> int {
                                auto client = f->Connect();
                                if (!client.ok()) return ReportError(client.status());
                                if (!id->empty()) {
                                  auto info = (*client)->GetJob(*id);
                                  if (!info.ok()) return ReportError(info.status());
                                  if (f->json())
                                    std::cout << ToJson(*info) << std::endl;
                                  else
                                    PrintDescribe(*info);
                                  return kExitOk;
                                }
                                auto list = (*client)->ListJobs(false);
                                if (!list.ok()) return ReportError(list.status());
                                if (f->json()) {
                                  std::cout << ToJson(*list) << std::endl;
                                  return kExitOk;
                                }
                                PrintJobHeader();
                                for (const auto& j : list->jobs()) PrintJobRow(j);
                                return kExitOk;
                              };
                            });

CommandRegistration kList(
    "list", "List jobs (active; --all for finished too)", [](CLI::App& app) -> CommandHandler {
      auto f = std::make_shared<ClientFlags>();
      auto all = std::make_shared<bool>(false);
      auto limit = std::make_shared<int>(50);
      app.add_flag("-a,--all", *all, "include finished jobs");
      app.add_option("--limit", *limit, "at most this many (newest first)")
          ->capture_default_str()
          ->check(CLI::Range(1, 1 << 30));
      f->Add(app);
      return [f, all, limit]() -> int {
        auto client = f->Connect();
        if (!client.ok()) return ReportError(client.status());
        auto list = (*client)->ListJobs(*all, *limit);
        if (!list.ok()) return ReportError(list.status());
        if (f->json()) {
          std::cout << ToJson(*list) << std::endl;
          return kExitOk;
        }
        PrintJobHeader();
        for (const auto& j : list->jobs()) PrintJobRow(j);
        return kExitOk;
      };
    });

CommandRegistration kDescribe("describe",
                              "A job's ranks, events (transitions with reasons) and spec",
                              [](CLI::App& app) -> CommandHandler {
                                auto f = std::make_shared<ClientFlags>();
                                auto id = std::make_shared<std::string>();
                                app.add_option("job", *id, "job id")->required();
                                f->Add(app);
                                return [f, id]() -> int {
                                  auto client = f->Connect();
                                  if (!client.ok()) return ReportError(client.status());
                                  auto info = (*client)->GetJob(*id, /*describe=*/true);
                                  if (!info.ok()) return ReportError(info.status());
                                  if (f->json())
                                    std::cout << ToJson(*info) << std::endl;
                                  else
                                    PrintDescribe(*info);
                                  return kExitOk;
                                };
                              });

CommandRegistration kLogs("logs", "Print a job's output lines (-f follows until it ends)",
                          [](CLI::App& app) -> CommandHandler {
                            auto f = std::make_shared<ClientFlags>();
                            auto id = std::make_shared<std::string>();
                            auto follow = std::make_shared<bool>(false);
                            auto rank = std::make_shared<int>(-1);
                            app.add_option("job", *id, "job id")->required();
                            app.add_flag("-f,--follow", *follow,
                                         "keep printing new lines until the job ends");
                            app.add_option("--rank", *rank, "only this rank (-1: all)")
                                ->check(CLI::Range(-1, 1 << 24));
                            f->Add(app);
                            return [f, id, follow, rank]() -> int {
                              auto client = f->Connect();
                              if (!client.ok()) return ReportError(client.status());
                              if (*rank >= 0) {  // a rank the job does not have is an error
                                auto info = (*client)->GetJob(*id);
                                if (!info.ok()) return ReportError(info.status());
                                if (*rank >= info->ranks()) {
                                  return ReportError(InvalidArgumentError(
                                      "--rank " + std::to_string(*rank) + ": job " + *id +
                                      " has " + std::to_string(info->ranks()) + " rank(s) (0.." +
                                      std::to_string(info->ranks() - 1) + ")"));
                                }
                              }
                              InstallStopHandlers();
                              uint64_t after = 0;
                              // After the job ended, output can still arrive (a worker resends
                              // what a restarted coordinator missed): -f stops only after a
                              // quiet spell, not at the first empty read.
                              constexpr auto kQuiet = std::chrono::seconds(3);
                              std::optional<std::chrono::steady_clock::time_point> quiet_since;
                              for (;;) {
                                auto batch = (*client)->Logs(*id, *rank, after);
                                if (!batch.ok()) return ReportError(batch.status());
                                for (const auto& r : batch->records()) {
                                  if (f->json())
                                    std::cout << ToJson(r) << "\n";
                                  else
                                    std::cout << "[" << r.rank() << "] " << r.text() << "\n";
                                }
                                std::cout.flush();
                                if (!std::cout.good()) return kExitOk;  // reader gone (| head)
                                after = batch->last_seq();
                                if (batch->records_size() > 0) {
                                  quiet_since.reset();
                                  continue;
                                }
                                if (!*follow || g_stop) return kExitOk;
                                if (batch->job_finished()) {
                                  const auto now = std::chrono::steady_clock::now();
                                  if (!quiet_since) quiet_since = now;
                                  if (now - *quiet_since >= kQuiet) return kExitOk;
                                }
                                std::this_thread::sleep_for(std::chrono::milliseconds(250));
                              }
                            };
                          });

CommandRegistration kCancel("cancel", "Cancel a job (its ranks get SIGTERM, then SIGKILL)",
                            [](CLI::App& app) -> CommandHandler {
                              auto f = std::make_shared<ClientFlags>();
                              auto id = std::make_shared<std::string>();
                              app.add_option("job", *id, "job id")->required();
                              f->Add(app, /*with_output=*/false);
                              return [f, id]() -> int {
                                auto client = f->Connect();
                                if (!client.ok()) return ReportError(client.status());
                                if (Status st = (*client)->Cancel(*id); !st.ok())
                                  return ReportError(st);
                                std::printf("%s: cancelled\n", id->c_str());
                                return kExitOk;
                              };
                            });

CommandRegistration kWorkers(
    "workers", "List workers, their resources and liveness", [](CLI::App& app) -> CommandHandler {
      auto f = std::make_shared<ClientFlags>();
      f->Add(app);
      return [f]() -> int {
        auto client = f->Connect();
        if (!client.ok()) return ReportError(client.status());
        auto list = (*client)->Workers();
        if (!list.ok()) return ReportError(list.status());
        if (f->json()) {
          std::cout << ToJson(*list) << std::endl;
          return kExitOk;
        }
        std::printf("%-16s %-6s %-16s %9s %9s %6s  %s\n", "WORKER", "STATE", "ADDRESS", "CPUS",
                    "GPUS", "RANKS", "HEARTBEAT");
        for (const auto& w : list->workers())
          std::printf("%-16s %-6s %-16s %4d/%-4d %4d/%-4d %6d  %s\n", w.worker_id().c_str(),
                      w.state().c_str(), w.address().c_str(), w.cpus_used(),
                      w.resources().cpu_slots(), w.gpus_used(), w.resources().gpus_size(),
                      w.running_ranks(), Ago(w.last_heartbeat_ms()).c_str());
        return kExitOk;
      };
    });

CommandRegistration kKeys(
    "keys", "CURVE key pairs for the coordinator, workers and clients",
    [](CLI::App& app) -> CommandHandler {
      auto dir = std::make_shared<std::string>(".gantry/keys");
      auto name = std::make_shared<std::string>("coordinator");
      auto gen = app.add_subcommand("gen", "write NAME.pub and NAME.key (0600) into --dir");
      gen->add_option("--dir", *dir, "key directory")->capture_default_str();
      gen->add_option("--name", *name, "key pair name")->capture_default_str();
      app.require_subcommand(1);
      return [dir, name]() -> int {
        auto keys = wire::GenerateCurveKeys();
        if (!keys.ok()) return ReportError(keys.status());
        if (Status st = wire::WriteKeyPair(*dir, *name, *keys); !st.ok()) return ReportError(st);
        std::printf("%s/%s.pub\n%s/%s.key\npublic key: %s\n", dir->c_str(), name->c_str(),
                    dir->c_str(), name->c_str(), keys->public_key.c_str());
        return kExitOk;
      };
    });

}  // namespace
}  // namespace gantry::cli
