// sched_bench: the gang scheduler on a simulated cluster (default 1,000 hosts x 8 GPUs in racks
// of 32) draining 10,000 queued gangs of 1-64 GPUs with random run times, event by event.
// Reports placement decisions/s and p50/p99 submit->placed scheduler latency (wall time of the
// pass that placed a job, i.e. what a submit waits for when the cluster has room), plus GPU
// utilisation of the packing while the queue is non-empty. No peer: rows carry targets.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "coordinator/scheduler/scheduler.h"

namespace {

using namespace gantry::coordinator;
using WallClock = std::chrono::steady_clock;

struct Options {
  int hosts = 1000;
  int gpus_per_host = 8;
  int hosts_per_rack = 32;
  int jobs = 10000;
  uint64_t seed = 1;
  bool json = false;
};

struct Running {
  double end_s;
  std::vector<int> rank_hosts;
  int gpus_per_rank;
};

GangRequest MakeJob(int i, std::mt19937_64& rng) {
  static const int kSizes[] = {1, 2, 4, 8, 16, 32, 64};
  static const int kWeights[] = {30, 20, 15, 15, 10, 6, 4};
  std::discrete_distribution<int> size_pick(std::begin(kWeights), std::end(kWeights));
  std::discrete_distribution<int> prio_pick({20, 70, 10});
  GangRequest g;
  g.job_id = "job-" + std::to_string(i);
  const int gpus = kSizes[size_pick(rng)];
  // Multi-host gangs use 8-GPU ranks; small ones are one rank holding all its GPUs, and a
  // third of the 2-8 GPU jobs are several 1-GPU ranks (torchrun-style).
  if (gpus > 8) {
    g.ranks = gpus / 8;
    g.gpus_per_rank = 8;
  } else if (gpus > 1 && rng() % 3 == 0) {
    g.ranks = gpus;
    g.gpus_per_rank = 1;
  } else {
    g.ranks = 1;
    g.gpus_per_rank = gpus;
  }
  g.cpus_per_rank = 4;
  g.priority = prio_pick(rng);
  g.tenant = "t" + std::to_string(rng() % 4);
  g.sequence = i;
  return g;
}

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * (v.size() - 1) + 0.5))];
}

void Row(const Options& o, const char* metric, double value, double target, const char* unit) {
  if (o.json) {
    std::printf(
        "{\"bench\": \"sched\", \"workload\": \"%dx%d-gpu-%d-gangs\", \"metric\": \"%s\", "
        "\"ours\": %.3f, \"target\": %.3f}\n",
        o.hosts, o.gpus_per_host, o.jobs, metric, value, target);
  } else {
    std::printf("%-28s %14.3f %-8s %14.3f\n", metric, value, unit, target);
  }
}

int Run(const Options& o) {
  std::mt19937_64 rng(o.seed);
  ClusterView view;
  for (int h = 0; h < o.hosts; ++h) {
    HostState host;
    host.id = "host-" + std::to_string(h);
    host.gpus_total = host.gpus_free = o.gpus_per_host;
    host.cpus_total = host.cpus_free = 64;
    host.labels["rack"] = "rack-" + std::to_string(h / o.hosts_per_rack);
    view.hosts.push_back(host);
  }
  std::vector<GangRequest> queue;
  for (int i = 0; i < o.jobs; ++i) queue.push_back(MakeJob(i, rng));
  std::stable_sort(queue.begin(), queue.end(), [](const GangRequest& a, const GangRequest& b) {
    return a.priority != b.priority ? a.priority > b.priority : a.sequence < b.sequence;
  });
  std::uniform_real_distribution<double> duration(60.0, 3600.0);
  std::vector<Running> running;
  SchedulerOptions opts;
  std::vector<double> latency_ms;
  double sched_wall_s = 0, now_s = 0, busy_gpu_s = 0;
  int64_t passes = 0, placed_single_rack = 0, placed_multi = 0;
  const double total_gpus = static_cast<double>(o.hosts) * o.gpus_per_host;
  int used_gpus = 0;
  while (!queue.empty()) {
    const auto t0 = WallClock::now();
    ScheduleResult r = Schedule(queue, view, opts, SchedClock::time_point{});
    const double pass_s = std::chrono::duration<double>(WallClock::now() - t0).count();
    sched_wall_s += pass_s;
    ++passes;
    opts.previous_reservation = r.reservation;
    std::vector<bool> gone(queue.size(), false);
    for (const GangPlacement& p : r.placed) {
      const GangRequest& g = queue[p.queue_index];
      for (int h : p.rank_hosts) {
        view.hosts[h].gpus_free -= g.gpus_per_rank;
        view.hosts[h].cpus_free -= g.cpus_per_rank;
      }
      used_gpus += g.ranks * g.gpus_per_rank;
      if (p.hosts_used > 1) (p.single_topology ? placed_single_rack : placed_multi)++;
      running.push_back({now_s + duration(rng), p.rank_hosts, g.gpus_per_rank});
      latency_ms.push_back(pass_s * 1e3);
      gone[p.queue_index] = true;
    }
    std::vector<GangRequest> next;
    next.reserve(queue.size());
    for (size_t i = 0; i < queue.size(); ++i)
      if (!gone[i]) next.push_back(std::move(queue[i]));
    queue.swap(next);
    if (queue.empty() || running.empty()) break;
    // Advance the fake clock to the next completion and free its resources.
    auto first =
        std::min_element(running.begin(), running.end(),
                         [](const Running& a, const Running& b) { return a.end_s < b.end_s; });
    busy_gpu_s += used_gpus * (first->end_s - now_s);
    now_s = first->end_s;
    for (int h : first->rank_hosts) {
      view.hosts[h].gpus_free += first->gpus_per_rank;
      view.hosts[h].cpus_free += 4;
      used_gpus -= first->gpus_per_rank;
    }
    *first = running.back();
    running.pop_back();
  }
  const double decisions = static_cast<double>(latency_ms.size());
  const double utilisation = now_s > 0 ? busy_gpu_s / (total_gpus * now_s) : 0;
  if (!o.json) {
    std::printf("sched_bench: %d hosts x %d GPUs (racks of %d), %d queued gangs of 1-64 GPUs\n",
                o.hosts, o.gpus_per_host, o.hosts_per_rack, o.jobs);
    std::printf(
        "%d placed in %lld passes, %.3f s of scheduler time; multi-host gangs inside "
        "one rack: %lld of %lld\n\n",
        static_cast<int>(decisions), static_cast<long long>(passes), sched_wall_s,
        static_cast<long long>(placed_single_rack),
        static_cast<long long>(placed_single_rack + placed_multi));
    std::printf("%-28s %14s %-8s %14s\n", "metric", "ours", "unit", "target");
  }
  Row(o, "decisions_per_s", decisions / sched_wall_s, 5000, "1/s");
  Row(o, "submit_to_placed_p50_ms", Percentile(latency_ms, 0.50), 10, "ms");
  Row(o, "submit_to_placed_p99_ms", Percentile(latency_ms, 0.99), 10, "ms");
  Row(o, "gpu_utilisation", utilisation, 0.9, "fraction");
  return decisions == o.jobs ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&](const char* name) -> long {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "sched_bench: %s needs a value\n", name);
        std::exit(2);
      }
      return std::strtol(argv[++i], nullptr, 10);
    };
    if (a == "--json")
      o.json = true;
    else if (a == "--hosts")
      o.hosts = static_cast<int>(next("--hosts"));
    else if (a == "--jobs")
      o.jobs = static_cast<int>(next("--jobs"));
    else if (a == "--gpus-per-host")
      o.gpus_per_host = static_cast<int>(next("--gpus-per-host"));
    else if (a == "--seed")
      o.seed = static_cast<uint64_t>(next("--seed"));
    else {
      std::fprintf(stderr,
                   "usage: sched_bench [--json] [--hosts N] [--gpus-per-host N] "
                   "[--jobs N] [--seed N]\nunknown argument: %s\n",
                   argv[i]);
      return 2;
    }
  }
  if (o.hosts <= 0 || o.jobs <= 0 || o.gpus_per_host < 8) {
    std::fprintf(stderr, "sched_bench: --hosts and --jobs must be > 0, --gpus-per-host >= 8\n");
    return 2;
  }
  return Run(o);
}
