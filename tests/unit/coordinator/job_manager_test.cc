// JobManager with a fake clock and a real SQLite store: lifecycle transitions, gang restart,
// lost workers, cancel, and recovery (re-adoption) after a coordinator restart.
#include "coordinator/job_manager.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <set>

#include "coordinator/worker_registry.h"

namespace gantry::coordinator {
namespace {

using std::chrono::milliseconds;

std::string Spec(int ranks, int max_restarts) {
  return "name: t\nkind: command\nresources: {ranks: " + std::to_string(ranks) +
         ", cpus_per_rank: 1}\ncommand: {argv: [/bin/true]}\nrestarts: {max: " +
         std::to_string(max_restarts) + "}\n";
}

class JobManagerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = std::filesystem::temp_directory_path() /
            ("jm-" + std::to_string(getpid()) + "-" +
             ::testing::UnitTest::GetInstance()->current_test_info()->name() + ".db");
    std::filesystem::remove(path_);
    Open();
  }
  void TearDown() override {
    manager_.reset();
    store_.reset();
    for (const char* ext : {"", "-wal", "-shm"}) std::filesystem::remove(path_.string() + ext);
  }
  void Open() {
    manager_.reset();
    store_ = std::move(JobStore::Open(path_.string())).value();
    registry_ = std::make_unique<WorkerRegistry>(&clock_, milliseconds(1000), 5);
    manager_ = std::make_unique<JobManager>(store_.get(), registry_.get(), &kv_, &clock_,
                                            ManagerOptions{});
  }
  void AddWorker(const std::string& id, int cpus, std::vector<proto::RankStatus> ranks = {}) {
    proto::RegisterWorker reg;
    reg.set_worker_id(id);
    reg.set_address("127.0.0.1");
    reg.mutable_resources()->set_cpu_slots(cpus);
    for (auto& r : ranks) *reg.add_ranks() = r;
    registry_->Register(reg, "id-" + id);
    manager_->OnWorkerRegistered(reg);
  }
  std::string State(const std::string& id) { return manager_->Info(id, false)->state(); }
  // A 2-rank job (one restart allowed) running on w0 whose rank 0 then exits with code 3.
  std::string FailedTwoRankGang() {
    AddWorker("w0", 4);
    proto::SubmitJob req;
    req.set_spec_yaml(Spec(2, 1));
    const std::string id = *manager_->Submit(req, "");
    Drain();
    manager_->OnRankStarted("w0", Status(id, 0, 0));
    manager_->OnRankStarted("w0", Status(id, 0, 1));
    manager_->OnRankExited("w0", Status(id, 0, 0, true, 3));
    return id;
  }
  std::vector<Outgoing> Drain() {
    manager_->Tick();
    return manager_->TakeOutbox();
  }
  std::vector<Outgoing> Beat(const std::string& worker, std::vector<proto::RankStatus> ranks) {
    proto::Heartbeat hb;
    hb.set_worker_id(worker);
    for (auto& r : ranks) *hb.add_ranks() = r;
    EXPECT_TRUE(registry_->Heartbeat(worker, "id-" + worker));
    manager_->OnHeartbeat(hb);
    return Drain();
  }
  std::vector<std::string> Events(const std::string& id) {
    std::vector<std::string> out;
    const proto::JobInfo info = *manager_->Info(id, true);
    for (const auto& e : info.events()) out.push_back(e.reason());
    return out;
  }
  proto::RankStatus Status(const std::string& job, int attempt, int rank, bool exited = false,
                           int code = 0) {
    proto::RankStatus s;
    s.set_job_id(job);
    s.set_attempt(attempt);
    s.set_rank(rank);
    s.set_pid(1000 + rank);
    s.set_exited(exited);
    s.set_exit_code(code);
    return s;
  }

  std::filesystem::path path_;
  FakeClock clock_;
  Rendezvous kv_;
  std::unique_ptr<JobStore> store_;
  std::unique_ptr<WorkerRegistry> registry_;
  std::unique_ptr<JobManager> manager_;
};

TEST_F(JobManagerTest, LifecycleToSucceeded) {
  AddWorker("w0", 4);
  proto::SubmitJob req;
  req.set_spec_yaml(Spec(2, 0));
  auto id = manager_->Submit(req, "");
  ASSERT_TRUE(id.ok()) << id.status().ToString();
  EXPECT_EQ(State(*id), "PENDING");
  auto out = Drain();
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0].worker_id, "w0");
  EXPECT_EQ(out[1].env.launch_rank().rank(), 1);
  EXPECT_EQ(out[1].env.launch_rank().world_size(), 2);
  EXPECT_EQ(out[1].env.launch_rank().local_world_size(), 2);
  EXPECT_EQ(out[0].env.launch_rank().token().size(), 32u);
  EXPECT_TRUE(manager_->ValidToken(*id, 0, out[0].env.launch_rank().token()));
  EXPECT_EQ(State(*id), "PLACED");
  manager_->OnRankStarted("w0", Status(*id, 0, 0));
  EXPECT_EQ(State(*id), "PLACED");
  manager_->OnRankStarted("w0", Status(*id, 0, 1));
  EXPECT_EQ(State(*id), "RUNNING");
  manager_->OnRankExited("w0", Status(*id, 0, 0, true, 0));
  manager_->OnRankExited("w0", Status(*id, 0, 1, true, 0));
  EXPECT_EQ(State(*id), "SUCCEEDED");
  EXPECT_EQ(registry_->Find("w0")->cpus_used, 0);
  auto info = manager_->Info(*id, true);
  ASSERT_TRUE(info.ok());
  std::vector<std::string> states;
  for (const auto& e : info->events()) states.push_back(e.state());
  EXPECT_EQ(states, (std::vector<std::string>{"PENDING", "PLACED", "RUNNING", "SUCCEEDED"}));
}

// A rank can finish before another rank of its gang has started: the job still goes through
// RUNNING when the last rank starts.
TEST_F(JobManagerTest, FastRankExitingBeforeTheLastStartStillGivesRunning) {
  AddWorker("w0", 4);
  proto::SubmitJob req;
  req.set_spec_yaml(Spec(2, 0));
  auto id = manager_->Submit(req, "");
  ASSERT_TRUE(id.ok()) << id.status().ToString();
  ASSERT_EQ(Drain().size(), 2u);
  manager_->OnRankStarted("w0", Status(*id, 0, 0));
  manager_->OnRankExited("w0", Status(*id, 0, 0, true, 0));
  EXPECT_EQ(State(*id), "PLACED");
  manager_->OnRankStarted("w0", Status(*id, 0, 1));
  EXPECT_EQ(State(*id), "RUNNING");
  manager_->OnRankExited("w0", Status(*id, 0, 1, true, 0));
  auto info = manager_->Info(*id, true);
  ASSERT_TRUE(info.ok());
  std::vector<std::string> states;
  for (const auto& e : info->events()) states.push_back(e.state());
  EXPECT_EQ(states, (std::vector<std::string>{"PENDING", "PLACED", "RUNNING", "SUCCEEDED"}));
}

TEST_F(JobManagerTest, FailingRankRestartsWholeGangThenFails) {
  const std::string id = FailedTwoRankGang();
  EXPECT_EQ(State(id), "RESTARTING");
  auto out = manager_->TakeOutbox();
  ASSERT_EQ(out.size(), 1u);
  EXPECT_TRUE(out[0].env.has_stop_ranks());
  EXPECT_EQ(out[0].env.stop_ranks().attempt(), 0);
  manager_->OnRankExited("w0", Status(id, 0, 1, true, 143));
  out = Drain();  // gang stopped -> PENDING attempt 1 -> placed again
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0].env.launch_rank().attempt(), 1);
  EXPECT_FALSE(manager_->ValidToken(id, 0, "")) << "old attempt's token is gone";
  manager_->OnRankExited("w0", Status(id, 0, 1, true, 0));  // stale: ignored
  EXPECT_EQ(State(id), "PLACED");
  manager_->OnRankExited("w0", Status(id, 1, 1, true, 9));
  EXPECT_EQ(State(id), "FAILED");
  EXPECT_NE(manager_->Info(id, false)->error().find("exited with code 9"), std::string::npos);
}

// A restarted gang keeps its place in the queue: a job submitted after it, waiting for the
// same slots, does not take them when the failed gang's ranks free them.
TEST_F(JobManagerTest, RestartedGangKeepsItsPlaceInTheQueue) {
  AddWorker("w0", 2);
  proto::SubmitJob req;
  req.set_spec_yaml(Spec(2, 1));
  const std::string first = *manager_->Submit(req, "");
  ASSERT_EQ(Drain().size(), 2u);
  manager_->OnRankStarted("w0", Status(first, 0, 0));
  manager_->OnRankStarted("w0", Status(first, 0, 1));
  req.set_spec_yaml(Spec(2, 0));
  const std::string later = *manager_->Submit(req, "");
  EXPECT_TRUE(Drain().empty()) << "no room for the later job yet";
  EXPECT_EQ(State(later), "PENDING");
  manager_->OnRankExited("w0", Status(first, 0, 0, true, 3));  // the gang fails
  EXPECT_EQ(State(first), "RESTARTING");
  manager_->TakeOutbox();  // StopRanks to rank 1
  manager_->OnRankExited("w0", Status(first, 0, 1, true, 143));
  auto out = Drain();
  ASSERT_EQ(out.size(), 2u);
  for (const auto& o : out) {
    EXPECT_EQ(o.env.launch_rank().job_id(), first) << "the later job jumped the queue";
    EXPECT_EQ(o.env.launch_rank().attempt(), 1);
  }
  EXPECT_EQ(State(later), "PENDING");
}

TEST_F(JobManagerTest, LostWorkerFailsAttemptAndFreesResources) {
  AddWorker("w0", 2);
  AddWorker("w1", 2);
  proto::SubmitJob req;
  req.set_spec_yaml(Spec(2, 1));
  auto id = *manager_->Submit(req, "");
  auto out = Drain();
  ASSERT_EQ(out.size(), 2u);
  const std::string host = out[0].worker_id;
  const std::string other = host == "w0" ? "w1" : "w0";
  clock_.Advance(milliseconds(3000));
  registry_->Heartbeat(other, "id-" + other);
  clock_.Advance(milliseconds(3000));  // `host` silent for 6 s > 5 x 1 s
  auto lost = registry_->ExpireLost();
  ASSERT_EQ(lost, std::vector<std::string>{host});
  manager_->OnWorkerLost(host);
  out = Drain();
  EXPECT_EQ(State(id), "PLACED");
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0].worker_id, other);
  EXPECT_EQ(manager_->Info(id, false)->attempt(), 1);
}

TEST_F(JobManagerTest, CancelPendingAndRunning) {
  proto::SubmitJob req;
  req.set_spec_yaml(Spec(1, 0));
  auto pending = *manager_->Submit(req, "");
  Drain();  // no workers: stays pending with a reason
  EXPECT_NE(manager_->Info(pending, false)->waiting().find("no set of schedulable hosts"),
            std::string::npos);
  ASSERT_TRUE(manager_->Cancel(pending, "").ok());
  EXPECT_EQ(State(pending), "CANCELLED");
  EXPECT_EQ(manager_->Cancel(pending, "").code(), StatusCode::kFailedPrecondition);
  AddWorker("w0", 1);
  auto running = *manager_->Submit(req, "team");
  Drain();
  EXPECT_EQ(manager_->Cancel(running, "other").code(), StatusCode::kPermissionDenied);
  ASSERT_TRUE(manager_->Cancel(running, "team").ok());
  auto out = manager_->TakeOutbox();
  ASSERT_EQ(out.size(), 1u);
  EXPECT_TRUE(out[0].env.has_stop_ranks());
  EXPECT_EQ(registry_->Find("w0")->cpus_used, 1) << "held until the rank is gone";
  manager_->OnRankExited("w0", Status(running, 0, 0, true, 143));
  EXPECT_EQ(registry_->Find("w0")->cpus_used, 0);
  EXPECT_EQ(State(running), "CANCELLED");
}

// A pending job whose stored spec this coordinator's rules refuse (stored by another version)
// fails saying why, instead of a command job launching without its argv.
TEST_F(JobManagerTest, AStoredSpecThatNoLongerParsesFailsTheJob) {
  JobRecord rec;
  rec.id = "old-1";
  rec.name = "old";
  rec.kind = "command";
  rec.state = JobState::kPending;
  rec.ranks = 1;
  rec.cpus_per_rank = 1;
  rec.sequence = store_->NextSequence();
  rec.spec_yaml = "name: old\nkind: command\ncommand: {argv: [true]}\n---\nname: other\n";
  ASSERT_TRUE(store_->UpsertJob(rec).ok());
  Open();  // a coordinator (re)starting on that store
  ASSERT_TRUE(manager_->Recover().ok());
  AddWorker("w0", 2);
  EXPECT_TRUE(Drain().empty()) << "nothing launched";
  EXPECT_EQ(State("old-1"), "FAILED");
  EXPECT_NE(manager_->Info("old-1", false)->error().find("does not parse"), std::string::npos)
      << manager_->Info("old-1", false)->error();
}

TEST_F(JobManagerTest, RecoveryReadoptsReportedRanksAndRestartsMissingOnes) {
  AddWorker("w0", 2);
  AddWorker("w1", 2);
  proto::SubmitJob req;
  req.set_spec_yaml(Spec(2, 2));
  auto a = *manager_->Submit(req, "");  // 2 ranks on one worker
  Drain();
  manager_->OnRankStarted("w0", Status(a, 0, 0));
  manager_->OnRankStarted("w0", Status(a, 0, 1));
  auto b = *manager_->Submit(req, "");  // the other worker
  auto out = Drain();
  const std::string wa = manager_->Info(a, false)->rank_info(0).worker_id();
  const std::string wb = out[0].worker_id;
  auto queued_req = req;
  queued_req.set_spec_yaml(Spec(2, 0));
  auto q = *manager_->Submit(queued_req, "");  // no room: queued
  Drain();
  Open();  // "kill -9": a fresh manager over the same database
  ASSERT_TRUE(manager_->Recover().ok());
  EXPECT_EQ(State(q), "PENDING");
  // Worker of `a` comes back reporting both ranks; the worker of `b` never does.
  AddWorker(wa, 2, {Status(a, 0, 0), Status(a, 0, 1)});
  EXPECT_EQ(State(a), "RUNNING");
  clock_.Advance(milliseconds(8000));
  AddWorker(wb, 2);  // it restarted: no ranks
  Drain();
  EXPECT_EQ(State(a), "RUNNING");
  EXPECT_EQ(manager_->Info(a, false)->attempt(), 0);
  EXPECT_EQ(manager_->Info(b, false)->attempt(), 1) << "lost ranks restart the gang";
}

// A coordinator killed after committing RESTARTING, before its StopRanks left: after the
// restart the gang's ranks come back with their worker, and each is told to stop (they used
// to be adopted and left running, holding their slots, while the next attempt was placed).
TEST_F(JobManagerTest, RecoveredRestartingGangIsStoppedWhenItsRanksReport) {
  const std::string id = FailedTwoRankGang();
  ASSERT_EQ(State(id), "RESTARTING");
  Open();  // killed: the StopRanks in the outbox never left
  ASSERT_TRUE(manager_->Recover().ok());
  AddWorker("w0", 4, {Status(id, 0, 1)});  // rank 1 still runs
  auto out = manager_->TakeOutbox();
  int stops = 0;
  for (const auto& o : out) {
    if (o.env.has_stop_ranks() && o.env.stop_ranks().job_id() == id &&
        o.env.stop_ranks().attempt() == 0 && o.worker_id == "w0") {
      ++stops;
    }
  }
  EXPECT_EQ(stops, 1) << "the surviving rank of the stopping gang must be stopped";
  manager_->OnRankExited("w0", Status(id, 0, 1, true, 143));
  out = Drain();  // stopped -> queued again as attempt 1 -> placed
  EXPECT_EQ(manager_->Info(id, false)->attempt(), 1);
}

// Lost messages between coordinator and worker are repaired from heartbeats, which list the
// ranks a worker holds: a LaunchRank that never arrived is sent again (once an interval has
// passed, so one still on its way is not doubled), and a lost RankStarted is taken from the
// heartbeat. Before, such a gang stayed PLACED for ever, holding its slots.
TEST_F(JobManagerTest, LostLaunchIsResentAndALostStartIsLearnedFromHeartbeats) {
  AddWorker("w0", 4);
  proto::SubmitJob req;
  req.set_spec_yaml(Spec(2, 0));
  const std::string id = *manager_->Submit(req, "");
  auto first = Drain();  // both LaunchRanks are "lost": never delivered
  ASSERT_EQ(first.size(), 2u);
  EXPECT_TRUE(Beat("w0", {}).empty()) << "a launch younger than an interval is not resent";
  clock_.Advance(milliseconds(1100));
  auto again = Beat("w0", {Status(id, 0, 0)});  // rank 0 arrived; its RankStarted was lost
  ASSERT_EQ(again.size(), 1u);
  ASSERT_TRUE(again[0].env.has_launch_rank());
  EXPECT_EQ(again[0].env.launch_rank().rank(), 1);
  EXPECT_EQ(again[0].env.launch_rank().token(), first[1].env.launch_rank().token());
  EXPECT_EQ(manager_->Info(id, false)->rank_info(0).state(), "RUNNING");
  EXPECT_EQ(State(id), "PLACED");
  clock_.Advance(milliseconds(1100));
  EXPECT_TRUE(Beat("w0", {Status(id, 0, 0), Status(id, 0, 1)}).empty());
  EXPECT_EQ(State(id), "RUNNING");
  manager_->OnRankExited("w0", Status(id, 0, 0, true, 0));
  manager_->OnRankExited("w0", Status(id, 0, 1, true, 0));
  EXPECT_EQ(State(id), "SUCCEEDED");
  EXPECT_EQ(registry_->Find("w0")->cpus_used, 0);
}

// A worker that never takes a launch (it keeps heartbeating without the rank) fails the
// attempt after `lost_after_missed` resends, naming the rank, and the gang restarts.
TEST_F(JobManagerTest, LaunchNeverTakenFailsTheAttemptAfterResends) {
  AddWorker("w0", 4);
  proto::SubmitJob req;
  req.set_spec_yaml(Spec(1, 1));
  const std::string id = *manager_->Submit(req, "");
  ASSERT_EQ(Drain().size(), 1u);
  int resent = 0;
  for (int beat = 0; beat < 10 && manager_->Info(id, false)->attempt() == 0; ++beat) {
    clock_.Advance(milliseconds(1100));
    for (const auto& o : Beat("w0", {})) resent += o.env.has_launch_rank();
  }
  EXPECT_EQ(manager_->Info(id, false)->attempt(), 1);
  EXPECT_EQ(resent, 5 + 1) << "five resends, then the next attempt's launch";
  bool named = false;
  for (const auto& e : Events(id))
    named = named || e.find("rank 0 on worker w0 never started") != std::string::npos;
  EXPECT_TRUE(named);
  EXPECT_EQ(registry_->Find("w0")->cpus_used, 1) << "only the new attempt's rank";
}

// A rank the coordinator holds as running that its worker no longer lists (its RankExited
// was lost and the worker forgot it) fails the attempt instead of leaving the job RUNNING.
TEST_F(JobManagerTest, RunningRankMissingFromHeartbeatFailsTheAttempt) {
  AddWorker("w0", 4);
  proto::SubmitJob req;
  req.set_spec_yaml(Spec(2, 0));
  const std::string id = *manager_->Submit(req, "");
  Drain();
  manager_->OnRankStarted("w0", Status(id, 0, 0));
  manager_->OnRankStarted("w0", Status(id, 0, 1));
  ASSERT_EQ(State(id), "RUNNING");
  EXPECT_TRUE(Beat("w0", {Status(id, 0, 0), Status(id, 0, 1)}).empty());
  auto out = Beat("w0", {Status(id, 0, 0)});
  EXPECT_EQ(State(id), "FAILED");
  EXPECT_NE(manager_->Info(id, false)->error().find("rank 1 on worker w0 is no longer reported"),
            std::string::npos)
      << manager_->Info(id, false)->error();
  ASSERT_EQ(out.size(), 1u);
  EXPECT_TRUE(out[0].env.has_stop_ranks()) << "rank 0 is stopped";
}

// Ranks of a finished job or of an older attempt (their StopRanks was lost), and ranks of a
// gang being stopped, are told to stop at every heartbeat that lists them, once per job.
TEST_F(JobManagerTest, HeartbeatRanksOfStoppedGangsAreStoppedAgain) {
  const std::string id = FailedTwoRankGang();  // attempt 0 stopping; rank 1 still runs
  ASSERT_EQ(State(id), "RESTARTING");
  manager_->TakeOutbox();  // that StopRanks is lost
  auto out = Beat("w0", {Status(id, 0, 1)});
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].env.stop_ranks().attempt(), 0);
  manager_->OnRankExited("w0", Status(id, 0, 1, true, 143));
  ASSERT_EQ(Drain().size(), 2u);  // attempt 1 placed
  // An attempt-0 rank still listed (a duplicate that survived) and a finished job's rank.
  out = Beat("w0", {Status(id, 0, 1), Status(id, 1, 0), Status(id, 1, 1), Status("gone", 3, 0),
                    Status("gone", 3, 1), Status("done", 0, 0, true, 0)});
  std::set<std::pair<std::string, int>> stops;
  for (const auto& o : out) {
    ASSERT_TRUE(o.env.has_stop_ranks());
    stops.insert({o.env.stop_ranks().job_id(), o.env.stop_ranks().attempt()});
  }
  EXPECT_EQ(out.size(), 2u) << "one StopRanks per (job, attempt); exited ranks need none";
  EXPECT_EQ(stops, (std::set<std::pair<std::string, int>>{{id, 0}, {"gone", 3}}));
  EXPECT_EQ(State(id), "RUNNING") << "attempt 1's ranks start from the heartbeat";
}

// Workers resend an output batch until it is acknowledged, possibly after a later batch got
// through: each line is stored once, whatever the order.
TEST_F(JobManagerTest, ResentOutputBatchesAreStoredOnce) {
  AddWorker("w0", 4);
  proto::SubmitJob req;
  req.set_spec_yaml(Spec(1, 0));
  const std::string id = *manager_->Submit(req, "");
  Drain();
  auto batch = [&](uint64_t first, std::vector<std::string> lines) {
    proto::RankLogs logs;
    logs.set_job_id(id);
    logs.set_rank(0);
    logs.set_first_line(first);
    for (const auto& l : lines) {
      proto::LogRecord* r = logs.add_records();
      r->set_stream("stdout");
      r->set_text(l);
    }
    manager_->OnRankLogs(logs);
  };
  batch(0, {"a", "b"});
  batch(4, {"e"});       // batch 2..3 was lost, 4 got through
  batch(0, {"a", "b"});  // a resend of a stored batch
  batch(2, {"c", "d"});  // the lost one, resent
  batch(4, {"e"});
  batch(5, {"f"});
  proto::GetLogs get;
  get.set_job_id(id);
  get.set_rank(-1);
  auto stored = manager_->Logs(get);
  ASSERT_TRUE(stored.ok()) << stored.status().ToString();
  std::string all;
  for (const auto& r : stored->records()) all += r.text();
  EXPECT_EQ(all, "abecdf") << "stored in arrival order, each line once";
  // Also after a coordinator restart (the dedupe is in the store, not in memory).
  Open();
  ASSERT_TRUE(manager_->Recover().ok());
  batch(2, {"c", "d"});
  batch(6, {"g"});
  stored = manager_->Logs(get);
  ASSERT_TRUE(stored.ok());
  all.clear();
  for (const auto& r : stored->records()) all += r.text();
  EXPECT_EQ(all, "abecdfg");
}

// A heartbeat still queued on a worker's replaced socket (an older registration) changes
// nothing: not the routing identity, and its old rank list does not fail the attempt.
TEST_F(JobManagerTest, HeartbeatOfAnOlderRegistrationIsIgnored) {
  proto::RegisterWorker reg;
  reg.set_worker_id("w0");
  reg.mutable_resources()->set_cpu_slots(4);
  reg.set_epoch(2);
  registry_->Register(reg, "id-new");
  bool stale = false;
  EXPECT_TRUE(registry_->Heartbeat("w0", "id-old", 1, &stale));
  EXPECT_TRUE(stale);
  EXPECT_EQ(registry_->Find("w0")->identity, "id-new");
  EXPECT_TRUE(registry_->Heartbeat("w0", "id-newer", 2, &stale));
  EXPECT_FALSE(stale);
  EXPECT_EQ(registry_->Find("w0")->identity, "id-newer") << "a reconnect of the same registration";
}

// A worker that re-registers with fewer ranks than were placed on it: the ones it lost must
// not be released from the fresh registration's counts (cpus_used went to 0 with one rank
// still running, and the scheduler overcommitted the worker).
TEST_F(JobManagerTest, ReRegistrationWithoutSomeRanksKeepsTheOthersSlots) {
  AddWorker("w0", 4);
  proto::SubmitJob req;
  req.set_spec_yaml(Spec(1, 0));
  const std::string a = *manager_->Submit(req, "");
  req.set_spec_yaml(Spec(2, 0));
  const std::string b = *manager_->Submit(req, "");
  Drain();
  for (const std::string& id : {a, b}) {
    const proto::JobInfo info = *manager_->Info(id, false);
    for (const auto& ri : info.rank_info()) manager_->OnRankStarted("w0", Status(id, 0, ri.rank()));
  }
  ASSERT_EQ(registry_->Find("w0")->cpus_used, 3);
  AddWorker("w0", 4, {Status(a, 0, 0)});  // b's two ranks are gone
  EXPECT_EQ(State(a), "RUNNING");
  EXPECT_EQ(State(b), "FAILED");
  EXPECT_EQ(registry_->Find("w0")->cpus_used, 1);
}

}  // namespace
}  // namespace gantry::coordinator
