// Scheduler tests: gang all-or-nothing, packing, topology, priority/FIFO, quotas, labels,
// backfill behind a reservation, and a fake-clock simulation proving the head never starves.
#include "coordinator/scheduler/scheduler.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <set>

#include "coordinator/scheduler/pack.h"

namespace gantry::coordinator {
namespace {

using std::chrono::seconds;

HostState Host(const std::string& id, int gpus_free, int gpus_total = 8, int cpus = 64,
               const std::string& rack = "") {
  HostState h;
  h.id = id;
  h.gpus_total = gpus_total;
  h.gpus_free = gpus_free;
  h.cpus_total = cpus;
  h.cpus_free = cpus;
  if (!rack.empty()) h.labels["rack"] = rack;
  return h;
}

GangRequest Gang(const std::string& id, int ranks, int gpus, int64_t seq, int priority = 1,
                 const std::string& tenant = "default") {
  GangRequest g;
  g.job_id = id;
  g.ranks = ranks;
  g.gpus_per_rank = gpus;
  g.cpus_per_rank = 1;
  g.sequence = seq;
  g.priority = priority;
  g.tenant = tenant;
  return g;
}

// One pass plus lookups by job id.
struct Outcome {
  std::vector<GangRequest> q;
  ScheduleResult r;
  const GangPlacement* Placed(const std::string& id) const {
    for (const auto& p : r.placed)
      if (p.job_id == id) return &p;
    return nullptr;
  }
  const WaitingGang* Waiting(const std::string& id) const {
    for (const auto& w : r.waiting)
      if (q[w.queue_index].job_id == id) return &w;
    return nullptr;
  }
};
Outcome RunPass(std::vector<GangRequest> q, const ClusterView& view,
                const SchedulerOptions& opts = {}, SchedClock::time_point now = {}) {
  Outcome o{std::move(q), {}};
  o.r = Schedule(o.q, view, opts, now);
  return o;
}

TEST(Scheduler, GangIsAllOrNothing) {
  ClusterView view{{Host("a", 4, 4), Host("b", 4, 4)}, {}};
  auto r = RunPass({Gang("big", 3, 4, 0), Gang("fits", 2, 4, 1)}, view, {}, {});
  ASSERT_EQ(r.r.placed.size(), 1u);
  EXPECT_EQ(r.r.placed[0].job_id, "fits");
  // The blocked gang held nothing: "fits" got both hosts.
  std::set<int> used(r.r.placed[0].rank_hosts.begin(), r.r.placed[0].rank_hosts.end());
  EXPECT_EQ(used.size(), 2u);
  EXPECT_EQ(r.Waiting("big")->reason, WaitReason::kInfeasible);
}

// Enough free GPUs in total (12) but split so only two hosts could take a 4-GPU rank: the
// gang of 3 such ranks must be placed whole or not at all. It waits for resources (each host
// has 8, so it fits once jobs end), holds nothing, and a small job behind it still runs.
TEST(Scheduler, GangThatFitsOnlyInPartWaitsWhole) {
  ClusterView view{{Host("a", 4), Host("b", 4), Host("c", 3), Host("d", 1)}, {}};
  auto r = RunPass({Gang("big", 3, 4, 0), Gang("small", 1, 1, 1)}, view, {}, {});
  EXPECT_EQ(r.Placed("big"), nullptr);
  ASSERT_NE(r.Waiting("big"), nullptr);
  EXPECT_EQ(r.Waiting("big")->reason, WaitReason::kResources);
  ASSERT_EQ(r.r.placed.size(), 1u);
  ASSERT_NE(r.Placed("small"), nullptr);
  ASSERT_EQ(r.Placed("small")->rank_hosts.size(), 1u);
  const int h = r.Placed("small")->rank_hosts[0];
  // Not on a host the big gang is reserved on: it can never take them and delay the head.
  EXPECT_EQ(r.r.reservation.job_id, "big");
  EXPECT_FALSE(r.r.reservation.host_indices.empty());
  for (int reserved : r.r.reservation.host_indices) EXPECT_NE(h, reserved);
}

TEST(Scheduler, PacksOntoFewestHosts) {
  ClusterView view{{Host("a", 2), Host("b", 8), Host("c", 4), Host("d", 8)}, {}};
  auto r = RunPass({Gang("j", 16, 1, 0)}, view, {}, {});
  ASSERT_EQ(r.r.placed.size(), 1u);
  EXPECT_EQ(r.r.placed[0].hosts_used, 2);
  EXPECT_EQ(r.r.placed[0].rank_hosts.size(), 16u);
  for (int h : r.r.placed[0].rank_hosts) EXPECT_TRUE(h == 1 || h == 3);
}

TEST(Scheduler, BestFitLeavesBigHostsWhole) {
  ClusterView view{{Host("a", 8), Host("b", 4), Host("c", 2)}, {}};
  auto r = RunPass({Gang("small", 3, 1, 0), Gang("whole", 1, 8, 1)}, view, {}, {});
  ASSERT_EQ(r.r.placed.size(), 2u);
  EXPECT_EQ(r.Placed("small")->rank_hosts, std::vector<int>({1, 1, 1}));
  EXPECT_EQ(r.Placed("whole")->rank_hosts, std::vector<int>({0}));
}

TEST(Scheduler, RanksAreContiguousPerHost) {
  ClusterView view{{Host("a", 4), Host("b", 4)}, {}};
  auto r = RunPass({Gang("j", 8, 1, 0)}, view, {}, {});
  ASSERT_EQ(r.r.placed.size(), 1u);
  const auto& rh = r.r.placed[0].rank_hosts;
  EXPECT_TRUE(std::is_sorted(rh.begin(), rh.end()) || std::is_sorted(rh.rbegin(), rh.rend()));
}

TEST(Scheduler, KeepsGangInsideOneRackWhenPossible) {
  // Rack r1 could hold it on 2 hosts only by spanning into r2; r2 holds it alone on 2 hosts.
  ClusterView view{{Host("a", 6, 8, 64, "r1"), Host("b", 5, 8, 64, "r2"), Host("c", 5, 8, 64, "r2"),
                    Host("d", 1, 8, 64, "r1")},
                   {}};
  auto r = RunPass({Gang("j", 10, 1, 0)}, view, {}, {});
  ASSERT_EQ(r.r.placed.size(), 1u);
  EXPECT_TRUE(r.r.placed[0].single_topology);
  for (int h : r.r.placed[0].rank_hosts) EXPECT_TRUE(h == 1 || h == 2) << h;
}

TEST(Scheduler, SpansRacksOnlyWhenNoRackFits) {
  ClusterView view{{Host("a", 4, 8, 64, "r1"), Host("b", 4, 8, 64, "r2")}, {}};
  auto r = RunPass({Gang("j", 8, 1, 0)}, view, {}, {});
  ASSERT_EQ(r.r.placed.size(), 1u);
  EXPECT_FALSE(r.r.placed[0].single_topology);
  EXPECT_EQ(r.r.placed[0].hosts_used, 2);
}

TEST(Scheduler, PriorityClassesThenFifo) {
  ClusterView view{{Host("a", 8)}, {}};
  auto r = RunPass(
      {Gang("n1", 1, 4, 0), Gang("h1", 1, 4, 5, 2), Gang("n2", 1, 4, 1), Gang("l1", 1, 4, 2, 0)},
      view, {.backfill = false}, {});
  ASSERT_EQ(r.r.placed.size(), 2u);
  EXPECT_EQ(r.r.placed[0].job_id, "h1");
  EXPECT_EQ(r.r.placed[1].job_id, "n1");
  EXPECT_NE(r.Waiting("n2"), nullptr);
  EXPECT_NE(r.Waiting("l1"), nullptr);
}

TEST(Scheduler, TenantQuotaIsNeverExceeded) {
  ClusterView view{{Host("a", 8), Host("b", 8)}, {{"alice", 4}}};
  SchedulerOptions opts;
  opts.tenant_gpu_quota = {{"alice", 8}};
  auto r = RunPass({Gang("a1", 1, 4, 0, 1, "alice"), Gang("a2", 1, 4, 1, 1, "alice"),
                    Gang("a3", 1, 16, 2, 1, "alice"), Gang("b1", 1, 4, 3, 1, "bob")},
                   view, opts, {});
  EXPECT_NE(r.Placed("a1"), nullptr);  // 4 used + 4 = 8: at the quota
  EXPECT_EQ(r.Waiting("a2")->reason, WaitReason::kQuota);
  EXPECT_EQ(r.Waiting("a3")->reason, WaitReason::kInfeasible);
  EXPECT_NE(WaitMessage(r.q[2], r.Waiting("a3")->reason, opts, view).find("quota"),
            std::string::npos);
  EXPECT_NE(r.Placed("b1"), nullptr);  // quota-blocked jobs do not block other tenants
}

TEST(Scheduler, RequiredLabelsRestrictHosts) {
  ClusterView view{{Host("a", 8), Host("b", 8)}, {}};
  view.hosts[1].labels["zone"] = "z2";
  GangRequest g = Gang("j", 1, 1, 0);
  g.labels["zone"] = "z2";
  GangRequest bad = Gang("k", 1, 1, 1);
  bad.labels["zone"] = "z9";
  auto r = RunPass({g, bad}, view, {}, {});
  ASSERT_NE(r.Placed("j"), nullptr);
  EXPECT_EQ(r.Placed("j")->rank_hosts, std::vector<int>({1}));
  EXPECT_EQ(r.Waiting("k")->reason, WaitReason::kInfeasible);
}

TEST(Scheduler, UnschedulableHostsAreSkipped) {
  ClusterView view{{Host("a", 8), Host("b", 8)}, {}};
  view.hosts[0].schedulable = false;
  auto r = RunPass({Gang("j", 2, 4, 0)}, view, {}, {});
  ASSERT_EQ(r.r.placed.size(), 1u);
  EXPECT_EQ(r.r.placed[0].rank_hosts, std::vector<int>({1, 1}));
}

TEST(Scheduler, CpuOnlyGangsUseCpuSlots) {
  ClusterView view{{Host("a", 0, 0, 2), Host("b", 0, 0, 2)}, {}};
  GangRequest g = Gang("cpu", 4, 0, 0);
  g.cpus_per_rank = 1;
  auto r = RunPass({g, Gang("cpu2", 1, 0, 1)}, view, {}, {});
  ASSERT_NE(r.Placed("cpu"), nullptr);
  EXPECT_EQ(r.Placed("cpu")->hosts_used, 2);
  EXPECT_NE(r.Waiting("cpu2"), nullptr);  // all 4 slots taken
}

TEST(Scheduler, BackfillUsesOnlyUnreservedHosts) {
  // Head needs 2 whole hosts; a and b are partly busy. c is busy too (2 free).
  ClusterView view{{Host("a", 6), Host("b", 4), Host("c", 2)}, {}};
  auto r =
      RunPass({Gang("head", 2, 8, 0), Gang("small", 1, 2, 1), Gang("mid", 1, 5, 2)}, view, {}, {});
  EXPECT_EQ(r.Waiting("head")->reason, WaitReason::kResources);
  ASSERT_EQ(r.r.reservation.job_id, "head");
  std::set<int> reserved(r.r.reservation.host_indices.begin(), r.r.reservation.host_indices.end());
  EXPECT_EQ(reserved, std::set<int>({0, 1}));  // the two that drain soonest
  ASSERT_NE(r.Placed("small"), nullptr);
  EXPECT_EQ(r.Placed("small")->rank_hosts, std::vector<int>({2}));
  EXPECT_EQ(r.Waiting("mid")->reason, WaitReason::kReserved);  // only fits on a
}

TEST(Scheduler, ReservationIsSticky) {
  ClusterView view{{Host("a", 2), Host("b", 6), Host("c", 0)}, {}};
  SchedulerOptions opts;
  opts.previous_reservation = {"head", {0}};
  auto r = RunPass({Gang("head", 1, 8, 0), Gang("small", 1, 2, 1)}, view, opts, {});
  EXPECT_EQ(r.r.reservation.host_indices, std::vector<int>({0}));
  ASSERT_NE(r.Placed("small"), nullptr);
  EXPECT_EQ(r.Placed("small")->rank_hosts, std::vector<int>({1}));
}

TEST(Scheduler, QueueWaitUsesTheGivenClock) {
  ClusterView view{{Host("a", 8)}, {}};
  GangRequest g = Gang("j", 1, 1, 0);
  g.submitted = SchedClock::time_point(seconds(100));
  auto r = RunPass({g}, view, {}, SchedClock::time_point(seconds(142)));
  ASSERT_EQ(r.r.placed.size(), 1u);
  EXPECT_EQ(r.r.placed[0].queue_wait, seconds(42));
}

TEST(Scheduler, SameInputSameDecision) {
  ClusterView view{
      {Host("a", 3, 8, 64, "r1"), Host("b", 7, 8, 64, "r1"), Host("c", 5, 8, 64, "r2")}, {}};
  std::vector<GangRequest> q{Gang("x", 3, 2, 0), Gang("y", 2, 1, 1), Gang("z", 4, 2, 2)};
  auto r1 = RunPass(q, view, {}, {});
  auto r2 = RunPass(q, view, {}, {});
  ASSERT_EQ(r1.r.placed.size(), r2.r.placed.size());
  for (size_t i = 0; i < r1.r.placed.size(); ++i)
    EXPECT_EQ(r1.r.placed[i].rank_hosts, r2.r.placed[i].rank_hosts);
}

// A fake-clock cluster: each placed job runs for its duration, then frees its resources.
struct Sim {
  ClusterView view;
  SchedulerOptions opts;
  std::vector<GangRequest> queue;
  struct Running {
    std::string id;
    std::vector<int> hosts;
    int gpus;
    int64_t end_s;
  };
  std::vector<Running> running;
  std::map<std::string, int64_t> duration_s;
  std::map<std::string, int64_t> placed_at;

  void Step(int64_t now_s) {
    for (auto it = running.begin(); it != running.end();) {
      if (it->end_s <= now_s) {
        for (int h : it->hosts) {
          view.hosts[h].gpus_free += it->gpus;
          view.hosts[h].cpus_free += 1;
        }
        it = running.erase(it);
      } else {
        ++it;
      }
    }
    auto r = RunPass(queue, view, opts, SchedClock::time_point(seconds(now_s)));
    opts.previous_reservation = r.r.reservation;
    for (const auto& p : r.r.placed) {
      auto q = std::find_if(queue.begin(), queue.end(),
                            [&](const GangRequest& g) { return g.job_id == p.job_id; });
      for (int h : p.rank_hosts) {
        view.hosts[h].gpus_free -= q->gpus_per_rank;
        view.hosts[h].cpus_free -= 1;
      }
      running.push_back({p.job_id, p.rank_hosts, q->gpus_per_rank, now_s + duration_s[p.job_id]});
      placed_at[p.job_id] = now_s;
      queue.erase(q);
    }
  }
};

TEST(Scheduler, HeadOfQueueDoesNotStarveUnderBackfill) {
  Sim sim;
  for (int i = 0; i < 4; ++i) sim.view.hosts.push_back(Host("h" + std::to_string(i), 8));
  int64_t seq = 0;
  // Two 1-GPU, 10 s jobs arrive every second, forever; a 32-GPU gang arrives at t=5.
  // Without the reservation the freed GPUs would always go to the small jobs.
  for (int64_t t = 0; t < 120; ++t) {
    for (int k = 0; k < 2; ++k) {
      GangRequest s = Gang("s" + std::to_string(t) + "_" + std::to_string(k), 1, 1, seq++);
      s.submitted = SchedClock::time_point(seconds(t));
      sim.duration_s[s.job_id] = 10;
      sim.queue.push_back(s);
    }
    if (t == 5) {
      sim.queue.push_back(Gang("big", 4, 8, seq++));
      sim.duration_s["big"] = 10;
    }
    sim.Step(t);
  }
  ASSERT_TRUE(sim.placed_at.count("big")) << "big gang starved";
  // Running jobs last 10 s: the reserved hosts drain within one job length.
  EXPECT_LE(sim.placed_at["big"], 5 + 10);
  // And small jobs kept flowing afterwards.
  EXPECT_TRUE(sim.placed_at.count("s100_0"));
}

TEST(Scheduler, BackfillKeepsUtilisationWhileHeadWaits) {
  Sim sim;
  for (int i = 0; i < 4; ++i) sim.view.hosts.push_back(Host("h" + std::to_string(i), 8));
  // Hosts 0-1 half busy for 20 s; the head wants 3 whole hosts and reserves 2, 3 and 0;
  // small jobs backfill host 1 only.
  sim.running.push_back({"busy", {0, 1}, 4, 20});
  sim.view.hosts[0].gpus_free = 4;
  sim.view.hosts[1].gpus_free = 4;
  sim.queue.push_back(Gang("head", 3, 8, 0));
  sim.duration_s["head"] = 5;
  for (int i = 0; i < 16; ++i) {
    sim.queue.push_back(Gang("s" + std::to_string(i), 1, 1, 1 + i));
    sim.duration_s["s" + std::to_string(i)] = 5;
  }
  sim.Step(0);
  EXPECT_FALSE(sim.placed_at.count("head"));
  int backfilled = 0;
  for (int i = 0; i < 16; ++i) backfilled += sim.placed_at.count("s" + std::to_string(i));
  EXPECT_EQ(backfilled, 4);  // host 1's four free GPUs
  EXPECT_EQ(sim.opts.previous_reservation.job_id, "head");
  EXPECT_EQ(sim.opts.previous_reservation.host_indices.size(), 3u);
  for (int64_t t = 1; t <= 20; ++t) sim.Step(t);
  ASSERT_TRUE(sim.placed_at.count("head"));
  EXPECT_EQ(sim.placed_at["head"], 20);
}

TEST(Pack, EmptyWhenNotEnough) {
  std::vector<HostState> hosts{Host("a", 3), Host("b", 3)};
  EXPECT_TRUE(PackGang(Gang("j", 7, 1, 0), hosts, {0, 1}, "").empty());
  EXPECT_EQ(PackGang(Gang("j", 6, 1, 0), hosts, {0, 1}, "").size(), 6u);
  EXPECT_TRUE(PackGang(Gang("j", 1, 1, 0), hosts, {}, "").empty());
}

}  // namespace
}  // namespace gantry::coordinator
