// Coordinator + workers as real processes on loopback: submit -> run -> succeed, cancel,
// kill -9 a rank (gang restarted), a failing job exhausts its restarts, a lost worker, and
// kill -9 of the coordinator followed by a restart (no job lost, running gang re-adopted).
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>

#include "tests/integration/coord_harness.h"

namespace gantry::testing {
namespace {

// The pid a rank printed as "child=PID" (after waiting for it to appear in the logs).
pid_t ChildPidFromLogs(Cluster& cl, coordinator::CoordinatorClient& c, const std::string& id) {
  for (int i = 0; i < 100; ++i) {
    const std::string logs = cl.Logs(c, id);
    const size_t at = logs.find("child=");
    if (at != std::string::npos) return pid_t(std::atoi(logs.c_str() + at + 6));
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return 0;
}

// True once `pid` has ended within `limit`; a zombie counts as ended unless `strict` (a
// zombie nobody reaped: PID 1 of a container may never reap, the worker must). A pid still
// there at the limit is killed, so no test leaves it behind.
bool EndsWithin(pid_t pid, std::chrono::milliseconds limit, bool strict = false) {
  const auto until = std::chrono::steady_clock::now() + limit;
  for (;;) {
    std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
    std::string pid_field, comm, state;
    stat >> pid_field >> comm >> state;
    if (kill(pid, 0) != 0 || (!strict && state == "Z")) return true;
    if (std::chrono::steady_clock::now() > until) {
      kill(pid, SIGKILL);
      return false;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}


TEST(CoordCluster, SubmitRunSucceedWithTorchrunEnvironment) {
  Cluster cl("submit");
  cl.StartCoordinator();
  cl.StartWorker("w0");
  cl.StartWorker("w1");
  ASSERT_TRUE(cl.WaitWorkers(2));
  auto c = cl.Client();
  auto id = c->Submit(CommandJob("env", 3,
                                 "echo R=$RANK W=$WORLD_SIZE L=$LOCAL_RANK LW=$LOCAL_WORLD_SIZE "
                                 "M=$MASTER_ADDR:$MASTER_PORT J=$GANTRY_JOB_ID A=$GANTRY_ATTEMPT "
                                 "T=${#GANTRY_TOKEN}; pwd; echo TR R=$RANK G=$GROUP_RANK "
                                 "GW=$GROUP_WORLD_SIZE RR=$ROLE_RANK RW=$ROLE_WORLD_SIZE "
                                 "RN=$ROLE_NAME RC=$TORCHELASTIC_RESTART_COUNT "
                                 "MR=$TORCHELASTIC_MAX_RESTARTS RID=$TORCHELASTIC_RUN_ID "
                                 "AS=$TORCHELASTIC_USE_AGENT_STORE OMP=$OMP_NUM_THREADS"),
                      "env.yaml", cl.dir().string());
  ASSERT_TRUE(id.ok()) << id.status().ToString();
  auto info = cl.WaitState(*c, *id, {"SUCCEEDED", "FAILED"});
  EXPECT_EQ(info.state(), "SUCCEEDED") << cl.Logs(*c, *id);
  const std::string logs = cl.Logs(*c, *id);
  for (int r = 0; r < 3; ++r)
    EXPECT_NE(logs.find("R=" + std::to_string(r) + " W=3"), std::string::npos) << logs;
  EXPECT_NE(logs.find("J=" + *id + " A=0 T=32"), std::string::npos) << logs;
  EXPECT_NE(logs.find(cl.dir().string()), std::string::npos) << "ranks run in the submit dir";
  // 3 ranks over two 2-slot workers: packed as 2 + 1, LOCAL_WORLD_SIZE matches.
  EXPECT_NE(logs.find("LW=2"), std::string::npos) << logs;
  EXPECT_NE(logs.find("LW=1"), std::string::npos) << logs;
  // LOCAL_RANK (scripts pick their GPU with it): 0 and 1 on the 2-rank worker, 0 on the other;
  // every rank has the same MASTER_ADDR:MASTER_PORT, a real port.
  std::multiset<std::string> local;
  std::set<std::string> masters;
  const std::regex line(R"(R=(\d) W=3 L=(\d+) LW=(\d) M=(\S+))");
  for (auto it = std::sregex_iterator(logs.begin(), logs.end(), line);
       it != std::sregex_iterator(); ++it) {
    local.insert((*it)[3].str() + ":" + (*it)[2].str());
    masters.insert((*it)[4].str());
  }
  EXPECT_EQ(local, (std::multiset<std::string>{"1:0", "2:0", "2:1"})) << logs;
  // The rest of torchrun's variables: GROUP_RANK numbers the hosts in the order of their
  // lowest rank (rank 0's is 0), ROLE_* is the one role, TORCHELASTIC_* the job and attempt.
  std::map<int, int> group_of_rank;
  const std::regex tr(R"(TR R=(\d) G=(\d) GW=2 RR=(\d) RW=3 RN=default RC=0 MR=(\d+) RID=(\S+) AS=False OMP=1)");
  for (auto it = std::sregex_iterator(logs.begin(), logs.end(), tr); it != std::sregex_iterator();
       ++it) {
    EXPECT_EQ((*it)[1].str(), (*it)[3].str()) << "ROLE_RANK is RANK";
    EXPECT_EQ(std::stoi((*it)[4].str()), info.max_restarts());
    EXPECT_EQ((*it)[5].str(), *id);
    group_of_rank[std::stoi((*it)[1].str())] = std::stoi((*it)[2].str());
  }
  ASSERT_EQ(group_of_rank.size(), 3u) << logs;
  EXPECT_EQ(group_of_rank[0], 0) << logs;
  std::multiset<int> groups;
  for (const auto& [rank, g] : group_of_rank) groups.insert(g);
  EXPECT_EQ(groups.count(1), 3u - groups.count(0)) << logs;
  EXPECT_GE(groups.count(1), 1u) << "3 ranks on two 2-slot workers span both\n" << logs;
  ASSERT_EQ(masters.size(), 1u) << logs;
  const std::string master = *masters.begin();
  const int port = std::atoi(master.substr(master.rfind(':') + 1).c_str());
  EXPECT_EQ(master.substr(0, master.rfind(':')), "127.0.0.1") << master;
  EXPECT_GT(port, 0) << master;
  // `gantry logs --rank` of a rank the job does not have is an error naming the range.
  const std::string out = (cl.dir() / "rank.txt").string();
  const int rc = std::system((std::string(GANTRY_BINARY) + " logs " + *id + " --rank 3 " +
                              "--coordinator " + cl.endpoint() + " >" + out + " 2>&1")
                                 .c_str());
  EXPECT_EQ(WEXITSTATUS(rc), 1);
  std::stringstream rank_err;
  rank_err << std::ifstream(out).rdbuf();
  EXPECT_NE(rank_err.str().find("has 3 rank(s) (0..2)"), std::string::npos) << rank_err.str();
  const int64_t submit_to_running = EventGapMs(info, "PENDING", 0, "RUNNING", 0);
  EXPECT_GE(submit_to_running, 0);
  std::printf("[measure] submit -> all ranks running: %lld ms\n",
              static_cast<long long>(submit_to_running));
}

// One coordinator per state directory: a second one on the same job store would place every
// job again (two gangs writing the same checkpoints). It is refused naming the holder's pid.
TEST(CoordCluster, ASecondCoordinatorOnTheSameStateDirIsRefused) {
  Cluster cl("statelock");
  const pid_t first = cl.StartCoordinator();
  auto c = cl.Client();
  bool up = false;
  for (int i = 0; i < 50 && !up; ++i) {
    up = c->Workers().ok();
    if (!up) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_TRUE(up);
  const std::string out = (cl.dir() / "second.txt").string();
  const std::string cmd = std::string("timeout 20 ") + GANTRY_BINARY + " coordinator --bind " +
                          "tcp://127.0.0.1:0 --dir " + (cl.dir() / "state").string() + " >" +
                          out + " 2>&1";
  const int rc = std::system(cmd.c_str());
  ASSERT_TRUE(WIFEXITED(rc));
  EXPECT_EQ(WEXITSTATUS(rc), 1);
  std::ifstream f(out);
  std::stringstream text;
  text << f.rdbuf();
  EXPECT_NE(text.str().find("in use by another coordinator (pid " + std::to_string(first) + ")"),
            std::string::npos)
      << text.str();
  EXPECT_TRUE(c->Workers().ok()) << "the first one still serves";
}

// `gantry up` killed with SIGKILL takes its coordinator and workers with it (they were left
// running jobs under PID 1).
TEST(CoordCluster, KilledGantryUpTakesItsClusterWithIt) {
  Cluster cl("upkill");
  const std::string dir = (cl.dir() / "up").string();
  const pid_t up = fork();
  ASSERT_GE(up, 0);
  if (up == 0) {
    const int null = open("/dev/null", O_WRONLY);
    dup2(null, 1);
    dup2(null, 2);
    execl(GANTRY_BINARY, GANTRY_BINARY, "up", "--workers", "1", "--dir", dir.c_str(), "--port", "0",
          static_cast<char*>(nullptr));
    _exit(127);
  }
  std::vector<pid_t> children;
  for (int i = 0; i < 100 && children.size() < 2; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    std::ifstream f("/proc/" + std::to_string(up) + "/task/" + std::to_string(up) + "/children");
    children.clear();
    for (pid_t c; f >> c;) children.push_back(c);
  }
  ASSERT_EQ(children.size(), 2u) << "coordinator and one worker";
  kill(up, SIGKILL);
  waitpid(up, nullptr, 0);
  for (pid_t c : children) {
    EXPECT_TRUE(EndsWithin(c, std::chrono::seconds(10))) << "pid " << c << " outlived gantry up";
  }
}

// A worker stopped with SIGTERM says it is leaving: the attempt on it fails once, naming the
// shutdown, and the restart goes to another worker. It used to take the ranks' SIGTERM exits
// for a failure, place the restart on the leaving worker, then lose it: two restarts for one
// stop, and FAILED with restarts {max: 1}.
TEST(CoordCluster, AWorkerStoppedWithSigtermCostsOneRestart) {
  Cluster cl("leaving");
  cl.StartCoordinator();
  cl.StartWorker("w0", 1);
  cl.StartWorker("w1", 1);
  ASSERT_TRUE(cl.WaitWorkers(2));
  auto c = cl.Client();
  // The rank exits 0 on SIGTERM, as graceful servers do: still a failed attempt (it was
  // taken for a success, and the job ended SUCCEEDED).
  auto id = c->Submit(CommandJob("stay", 1,
                                 "trap \"exit 0\" TERM; echo up; sleep 60 & wait",
                                 /*max_restarts=*/1),
                      "s.yaml", "");
  ASSERT_TRUE(id.ok()) << id.status().ToString();
  auto info = cl.WaitState(*c, *id, {"RUNNING"});
  ASSERT_EQ(info.rank_info_size(), 1);
  const std::string first = info.rank_info(0).worker_id();
  const std::string other = first == "w0" ? "w1" : "w0";
  cl.Stop(first);
  // Attempt 1 runs on the other worker; the job is not FAILED and used one restart.
  for (int i = 0; i < 100; ++i) {
    info = *c->GetJob(*id, true);
    if (info.attempt() == 1 && info.state() == "RUNNING") break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_EQ(info.state(), "RUNNING") << info.DebugString() << cl.ReadLog(first);
  EXPECT_EQ(info.attempt(), 1) << info.DebugString();
  ASSERT_EQ(info.rank_info_size(), 1);
  EXPECT_EQ(info.rank_info(0).worker_id(), other);
  EXPECT_TRUE(HasEventReason(info, "worker " + first + " is shutting down")) << info.DebugString();
  // Still attempt 1 a moment later (no second failure from the leaving worker's exits).
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  info = *c->GetJob(*id, true);
  EXPECT_EQ(info.attempt(), 1) << info.DebugString();
  EXPECT_EQ(info.state(), "RUNNING") << info.DebugString();
  ASSERT_TRUE(c->Cancel(*id).ok());
}

// A coordinator and one 1-slot worker "w0" running `script` (a 1-rank command job that
// prints "child=PID"); `child` is that pid (0 if it never printed it).
struct JobWithAChild {
  std::unique_ptr<coordinator::CoordinatorClient> client;
  std::string id;
  pid_t child = 0;
};
JobWithAChild StartJobWithAChild(Cluster& cl, const std::string& script) {
  JobWithAChild j;
  cl.StartCoordinator();
  cl.StartWorker("w0", 1);
  if (!cl.WaitWorkers(1)) return j;
  j.client = cl.Client();
  auto id = j.client->Submit(CommandJob("child", 1, script), "c.yaml", "");
  if (!id.ok()) return j;
  j.id = *id;
  cl.WaitState(*j.client, j.id, {"RUNNING"});
  j.child = ChildPidFromLogs(cl, *j.client, j.id);
  return j;
}

// A rank's child in a session of its own escapes the process-group kill of a cancel; the
// worker (their subreaper) kills it once its rank is done. It used to run on under PID 1.
TEST(CoordCluster, CancelEndsARanksChildInItsOwnSession) {
  Cluster cl("setsid");
  JobWithAChild j = StartJobWithAChild(cl, "setsid sleep 1009 & echo child=$!; sleep 1010");
  ASSERT_GT(j.child, 0) << (j.client ? cl.Logs(*j.client, j.id) : "no cluster");
  ASSERT_TRUE(j.client->Cancel(j.id).ok());
  cl.WaitState(*j.client, j.id, {"CANCELLED"});
  EXPECT_TRUE(EndsWithin(j.child, std::chrono::seconds(10)))
      << "pid " << j.child << " (setsid) outlived its cancelled rank";
}

// Children a finished rank left running are killed and reaped by the worker (their
// subreaper): neither running on nor piling up as zombies.
TEST(CoordCluster, ChildrenAFinishedRankLeftAreKilledAndReaped) {
  Cluster cl("reaped");
  cl.StartCoordinator();
  cl.StartWorker("w0", 1);
  ASSERT_TRUE(cl.WaitWorkers(1));
  auto c = cl.Client();
  auto id = c->Submit(
      CommandJob("leaves", 1, "for i in 1 2 3; do sleep 300 & echo child=$!; done; exit 0"),
      "r.yaml", "");
  ASSERT_TRUE(id.ok()) << id.status().ToString();
  auto info = cl.WaitState(*c, *id, {"SUCCEEDED", "FAILED"});
  EXPECT_EQ(info.state(), "SUCCEEDED");
  std::vector<pid_t> children;
  const std::string logs = cl.Logs(*c, *id);
  for (size_t at = logs.find("child="); at != std::string::npos; at = logs.find("child=", at + 1))
    children.push_back(pid_t(std::atoi(logs.c_str() + at + 6)));
  ASSERT_EQ(children.size(), 3u) << logs;
  for (pid_t child : children) {
    EXPECT_TRUE(EndsWithin(child, std::chrono::seconds(5), /*strict=*/true))
        << "pid " << child << " still exists (running or an unreaped zombie)";
  }
}

// A worker stopped with SIGTERM takes what its ranks left (a setsid child) with it.
TEST(CoordCluster, AStoppedWorkerTakesItsRanksLeftoversWithIt) {
  Cluster cl("stopleft");
  JobWithAChild j = StartJobWithAChild(cl, "setsid sleep 1009 & echo child=$!; sleep 1010");
  ASSERT_GT(j.child, 0) << (j.client ? cl.Logs(*j.client, j.id) : "no cluster");
  cl.Stop("w0");
  EXPECT_TRUE(EndsWithin(j.child, std::chrono::seconds(5)))
      << "pid " << j.child << " outlived its stopped worker";
}

// kill -9 of a worker ends its rank leaders (PDEATHSIG) but not their children, which run on
// under PID 1; a worker started again on the same directory kills them.
TEST(CoordCluster, AWorkerOnTheSameDirEndsWhatAKilledOneLeft) {
  Cluster cl("leftovers");
  JobWithAChild j = StartJobWithAChild(cl, "sleep 1003 & echo child=$!; wait");
  ASSERT_GT(j.child, 0) << (j.client ? cl.Logs(*j.client, j.id) : "no cluster");
  cl.Kill9("w0");
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_EQ(kill(j.child, 0), 0) << "the leftover to clean up is still there";
  cl.StartWorker("w0", 1);
  EXPECT_TRUE(EndsWithin(j.child, std::chrono::seconds(10)))
      << "pid " << j.child << " left by the killed worker still runs";
  j.client->Cancel(j.id).IgnoreError();
}

TEST(CoordCluster, CancelStopsEveryRank) {
  Cluster cl("cancel");
  cl.StartCoordinator();
  cl.StartWorker("w0");
  ASSERT_TRUE(cl.WaitWorkers(1));
  auto c = cl.Client();
  auto id = c->Submit(CommandJob("sleeper", 2, "echo up; sleep 60"), "s.yaml", "");
  ASSERT_TRUE(id.ok());
  auto info = cl.WaitState(*c, *id, {"RUNNING"});
  ASSERT_EQ(info.rank_info_size(), 2);
  std::vector<int> pids;
  for (const auto& r : info.rank_info()) pids.push_back(r.pid());
  ASSERT_TRUE(c->Cancel(*id).ok());
  info = cl.WaitState(*c, *id, {"CANCELLED"});
  EXPECT_EQ(info.state(), "CANCELLED");
  // The ranks are gone within the grace period (SIGTERM ends `sleep`).
  for (int i = 0; i < 100; ++i) {
    bool alive = false;
    for (int p : pids) alive = alive || kill(p, 0) == 0;
    if (!alive) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  for (int p : pids) EXPECT_NE(kill(p, 0), 0) << "rank pid " << p << " still alive";
  EXPECT_FALSE(c->Cancel(*id).ok()) << "a finished job cannot be cancelled again";
  int used = -1;
  for (int i = 0; i < 100 && used != 0; ++i) {  // exits reach the coordinator within ~50 ms
    auto workers = c->Workers();
    ASSERT_TRUE(workers.ok());
    used = workers->workers(0).cpus_used();
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_EQ(used, 0) << "resources released";
}

// The slots a cancelled job frees go to the job queued behind it at once. The scheduler ran
// only on job transitions, and the cancelled job's ranks end after its transition (it is then
// just erased), so the queued job waited for some unrelated event.
TEST(CoordCluster, CancelledJobsSlotGoesToTheQueuedJob) {
  Cluster cl("cancelqueue");
  cl.StartCoordinator();
  cl.StartWorker("w0", 1);
  ASSERT_TRUE(cl.WaitWorkers(1));
  auto c = cl.Client();
  auto first = c->Submit(CommandJob("first", 1, "echo up; exec sleep 60"), "a.yaml", "");
  ASSERT_TRUE(first.ok());
  cl.WaitState(*c, *first, {"RUNNING"});
  auto second = c->Submit(CommandJob("second", 1, "echo second ran"), "b.yaml", "");
  ASSERT_TRUE(second.ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  ASSERT_EQ(cl.WaitState(*c, *second, {"PENDING"}).state(), "PENDING") << "one slot only";
  ASSERT_TRUE(c->Cancel(*first).ok());
  const auto info = cl.WaitState(*c, *second, {"SUCCEEDED", "FAILED"}, std::chrono::seconds(20));
  EXPECT_EQ(info.state(), "SUCCEEDED") << info.DebugString();
}

TEST(CoordCluster, KilledRankRestartsTheGang) {
  Cluster cl("killrank");
  cl.StartCoordinator();
  cl.StartWorker("w0");
  ASSERT_TRUE(cl.WaitWorkers(1));
  auto c = cl.Client();
  auto id = c->Submit(CommandJob("flaky", 2,
                                 "echo start $RANK $GANTRY_ATTEMPT; if [ $GANTRY_ATTEMPT = 0 ]; "
                                 "then sleep 60; fi; echo finish $RANK",
                                 2),
                      "f.yaml", "");
  ASSERT_TRUE(id.ok());
  auto info = cl.WaitState(*c, *id, {"RUNNING"});
  ASSERT_EQ(info.rank_info_size(), 2);
  ASSERT_EQ(kill(info.rank_info(1).pid(), SIGKILL), 0);
  info = cl.WaitState(*c, *id, {"SUCCEEDED", "FAILED"});
  EXPECT_EQ(info.state(), "SUCCEEDED");
  EXPECT_EQ(info.attempt(), 1);
  bool saw_restart = false;
  for (const auto& e : info.events())
    saw_restart = saw_restart ||
                  (e.state() == "RESTARTING" && e.reason().find("rank 1") != std::string::npos &&
                   e.reason().find("137") != std::string::npos);
  EXPECT_TRUE(saw_restart) << info.DebugString();
  const std::string logs = cl.Logs(*c, *id);
  EXPECT_NE(logs.find("finish 0"), std::string::npos);
  EXPECT_NE(logs.find("finish 1"), std::string::npos);
  const int64_t death_to_running = EventGapMs(info, "RESTARTING", 0, "RUNNING", 1);
  EXPECT_GE(death_to_running, 0);
  std::printf("[measure] rank death -> gang running again: %lld ms\n",
              static_cast<long long>(death_to_running));
}

TEST(CoordCluster, FailsWithFirstErrorAfterMaxRestarts) {
  Cluster cl("fail");
  cl.StartCoordinator();
  cl.StartWorker("w0");
  ASSERT_TRUE(cl.WaitWorkers(1));
  auto c = cl.Client();
  auto id = c->Submit(CommandJob("bad", 1, "echo failing; exit 3", 1), "b.yaml", "");
  ASSERT_TRUE(id.ok());
  auto info = cl.WaitState(*c, *id, {"FAILED", "SUCCEEDED"});
  EXPECT_EQ(info.state(), "FAILED");
  EXPECT_EQ(info.attempt(), 1);
  EXPECT_NE(info.error().find("exited with code 3"), std::string::npos) << info.error();
  // A program that does not exist fails with 127 and says why (in the job's error too).
  auto id2 = c->Submit(
      "name: nope\nkind: command\ncommand: {argv: [/nonexistent/prog]}\n"
      "restarts: {max: 0}\n",
      "n.yaml", "");
  ASSERT_TRUE(id2.ok());
  info = cl.WaitState(*c, *id2, {"FAILED", "SUCCEEDED"});
  EXPECT_NE(info.error().find("127"), std::string::npos) << info.error();
  EXPECT_NE(info.error().find("cannot execute /nonexistent/prog"), std::string::npos)
      << info.error();
  EXPECT_NE(cl.Logs(*c, *id2).find("/nonexistent/prog"), std::string::npos);
  // A working directory the spec names must exist (it was silently replaced by the worker's).
  auto id3 = c->Submit(
      "name: nowd\nkind: command\ncommand: {argv: [pwd], workdir: /nonexistent/gantry-wd}\n"
      "restarts: {max: 0}\n",
      "w.yaml", "");
  ASSERT_TRUE(id3.ok()) << id3.status().ToString();
  info = cl.WaitState(*c, *id3, {"FAILED", "SUCCEEDED"});
  EXPECT_EQ(info.state(), "FAILED");
  EXPECT_NE(info.error().find("/nonexistent/gantry-wd does not exist"), std::string::npos)
      << info.error();
}

TEST(CoordCluster, BadSpecIsRejectedWithLineNumber) {
  Cluster cl("badspec");
  cl.StartCoordinator();
  auto c = cl.Client();
  auto id = c->Submit("name: x\nkind: command\nresources: {ranks: 0}\ncommand: {argv: [ls]}\n",
                      "bad.yaml", "");
  ASSERT_FALSE(id.ok());
  EXPECT_NE(id.status().message().find("bad.yaml:3"), std::string::npos) << id.status().ToString();
}

TEST(CoordCluster, LostWorkerRestartsGangElsewhere) {
  Cluster cl("lostworker");
  cl.StartCoordinator();
  cl.StartWorker("w0", 1);
  ASSERT_TRUE(cl.WaitWorkers(1));
  auto c = cl.Client();
  auto id = c->Submit(CommandJob("mover", 1,
                                 "echo on attempt $GANTRY_ATTEMPT; if [ $GANTRY_ATTEMPT = 0 ]; "
                                 "then sleep 60; fi",
                                 1),
                      "m.yaml", "");
  ASSERT_TRUE(id.ok());
  auto info = cl.WaitState(*c, *id, {"RUNNING"});
  ASSERT_EQ(info.rank_info(0).worker_id(), "w0");
  const int orphan = info.rank_info(0).pid();
  cl.StartWorker("w1", 1);
  ASSERT_TRUE(cl.WaitWorkers(2));
  cl.Kill9("w0");          // heartbeats stop: lost after 5 x 200 ms
  kill(-orphan, SIGKILL);  // the orphaned rank of the dead worker (its own process group)
  info = cl.WaitState(*c, *id, {"SUCCEEDED", "FAILED"});
  EXPECT_EQ(info.state(), "SUCCEEDED");
  EXPECT_EQ(info.rank_info(0).worker_id(), "w1");
  EXPECT_TRUE(HasEventReason(info, "w0 was lost")) << info.DebugString();
}

// A worker that is stopped (SIGTERM) stops its ranks and reports how they ended before it
// goes: the job fails with the rank's exit, not later with "worker was lost".
TEST(CoordCluster, StoppedWorkerReportsItsRanksExits) {
  Cluster cl("stopworker");
  cl.StartCoordinator();
  cl.StartWorker("w0", 1);
  ASSERT_TRUE(cl.WaitWorkers(1));
  auto c = cl.Client();
  auto id = c->Submit(CommandJob("stopped", 1, "echo started; exec sleep 60"), "s.yaml", "");
  ASSERT_TRUE(id.ok());
  cl.WaitState(*c, *id, {"RUNNING"});
  cl.Stop("w0");
  auto info = cl.WaitState(*c, *id, {"SUCCEEDED", "FAILED"});
  EXPECT_EQ(info.state(), "FAILED");
  // The worker says it is leaving before it stops its ranks: the attempt fails at once with
  // that reason, not at the lost-worker timeout.
  EXPECT_TRUE(HasEventReason(info, "worker w0 is shutting down"))
      << info.DebugString() << cl.ReadLog("w0");
  EXPECT_FALSE(HasEventReason(info, "w0 was lost")) << info.DebugString();
}

TEST(CoordCluster, CoordinatorKill9AndRestartLosesNoJob) {
  Cluster cl("restart");
  cl.StartCoordinator();
  cl.StartWorker("w0", 1);
  ASSERT_TRUE(cl.WaitWorkers(1));
  auto c = cl.Client();
  // `running` holds the only slot for ~4 s; `queued` waits behind it.
  auto running = c->Submit(CommandJob("running", 1, "echo begin; sleep 4; echo end"), "r.yaml", "");
  ASSERT_TRUE(running.ok());
  auto info = cl.WaitState(*c, *running, {"RUNNING"});
  const int pid_before = info.rank_info(0).pid();
  auto queued = c->Submit(CommandJob("queued", 1, "echo queued ran"), "q.yaml", "");
  ASSERT_TRUE(queued.ok());
  cl.Kill9("coordinator");
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  cl.StartCoordinator();
  auto c2 = cl.Client();
  info = cl.WaitState(*c2, *running, {"SUCCEEDED", "FAILED"});
  EXPECT_EQ(info.state(), "SUCCEEDED");
  EXPECT_EQ(info.attempt(), 0) << "re-adopted, not restarted";
  EXPECT_EQ(info.rank_info(0).pid(), pid_before);
  auto q = cl.WaitState(*c2, *queued, {"SUCCEEDED", "FAILED"});
  EXPECT_EQ(q.state(), "SUCCEEDED");
  EXPECT_NE(cl.Logs(*c2, *queued).find("queued ran"), std::string::npos);
  EXPECT_NE(cl.Logs(*c2, *running).find("end"), std::string::npos);
  auto all = c2->ListJobs(true);
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(all->jobs_size(), 2);
}

}  // namespace
}  // namespace gantry::testing

namespace gantry::testing {
namespace {

TEST(CoordCluster, TrainJobRunsGantryTrainAndReportsProgress) {
  Cluster cl("train");
  cl.StartCoordinator();
  cl.StartWorker("w0");
  ASSERT_TRUE(cl.WaitWorkers(1));
  auto c = cl.Client();
  auto id = c->Submit(
      "name: tiny\nkind: train\nmodel: {type: mlp, widths: [16, 32, 4]}\n"
      "data: {uri: synthetic, batch_per_rank: 8, synthetic_samples: 256}\n"
      "optimizer: {type: sgd, lr: 0.01}\n"
      "train: {steps: 20, log_every: 5, checkpoint_uri: ckpt}\nrestarts: {max: 0}\n",
      "tiny.yaml", cl.dir().string());
  ASSERT_TRUE(id.ok()) << id.status().ToString();
  auto info = cl.WaitState(*c, *id, {"SUCCEEDED", "FAILED"}, std::chrono::seconds(60));
  EXPECT_EQ(info.state(), "SUCCEEDED") << cl.Logs(*c, *id);
  EXPECT_EQ(info.progress().step(), 20);
  EXPECT_EQ(info.progress().total_steps(), 20);
  EXPECT_GT(info.progress().loss(), 0.0);
  EXPECT_TRUE(std::filesystem::exists(cl.dir() / "ckpt")) << "checkpoint written in the submit dir";
}

}  // namespace
}  // namespace gantry::testing
