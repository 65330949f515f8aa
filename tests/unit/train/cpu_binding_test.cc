// CPU binding of local ranks (train/cpu_binding.h): the plan for each mode and host shape, the
// real binding of this process in a child, and the data-parallel inline-reduce choice that
// goes with it.
#include "train/cpu_binding.h"

#include <gtest/gtest.h>
#include <sched.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>

#include "train/data_parallel.h"

namespace gantry::train {
namespace {

std::vector<int> Range(int n) {
  std::vector<int> v;
  for (int i = 0; i < n; ++i) v.push_back(i);
  return v;
}

TEST(CpuBinding, AutoSplitsTheWholeMachineEvenlyAmongLocalRanks) {
  for (int r = 0; r < 2; ++r) {
    auto p = PlanCpuBinding("auto", Range(4), 4, r, 2);
    ASSERT_TRUE(p.ok()) << p.status().ToString();
    EXPECT_TRUE(p->bind);
    EXPECT_EQ(p->cpus, (std::vector<int>{2 * r, 2 * r + 1}));
  }
  // 3 ranks on 8 CPUs: 2 each, the last 2 unused; rank 2 gets 4-5.
  auto p = PlanCpuBinding("auto", Range(8), 8, 2, 3);
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->cpus, (std::vector<int>{4, 5}));
  // The slices follow the allowed list, not CPU numbers.
  p = PlanCpuBinding("core", {1, 3, 5, 7}, 8, 1, 2);
  ASSERT_TRUE(p.ok());
  EXPECT_TRUE(p->bind);
  EXPECT_EQ(p->cpus, (std::vector<int>{5, 7}));
}

TEST(CpuBinding, AutoLeavesRestrictedSingleAndOversubscribedRanksAlone) {
  // A launcher (worker cpuset, taskset, container) already chose: auto keeps it, core splits it.
  auto p = PlanCpuBinding("auto", {0, 1}, 4, 0, 2);
  ASSERT_TRUE(p.ok());
  EXPECT_FALSE(p->bind);
  EXPECT_NE(p->reason.find("2 of 4 CPUs"), std::string::npos) << p->reason;
  p = PlanCpuBinding("core", {0, 1}, 4, 1, 2);
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->cpus, (std::vector<int>{1}));
  // One local rank, or no LOCAL_RANK: nothing to split.
  EXPECT_FALSE(PlanCpuBinding("auto", Range(4), 4, 0, 1)->bind);
  EXPECT_FALSE(PlanCpuBinding("auto", Range(4), 4, -1, 2)->bind);
  // More local ranks than CPUs: no slice each.
  p = PlanCpuBinding("auto", Range(2), 2, 3, 4);
  ASSERT_TRUE(p.ok());
  EXPECT_FALSE(p->bind);
  EXPECT_NE(p->reason.find("not enough"), std::string::npos) << p->reason;
  EXPECT_FALSE(PlanCpuBinding("none", Range(4), 4, 0, 2)->bind);
}

TEST(CpuBinding, BadModeAndRankAreClearErrors) {  // (BindLocalRank warns and uses auto for a bad mode)
  auto p = PlanCpuBinding("numa", Range(4), 4, 0, 2);
  ASSERT_FALSE(p.ok());
  EXPECT_NE(p.status().message().find("GANTRY_BIND is 'numa'"), std::string::npos);
  p = PlanCpuBinding("auto", Range(4), 4, 2, 2);
  ASSERT_FALSE(p.ok());
  EXPECT_NE(p.status().message().find("LOCAL_RANK 2"), std::string::npos);
}

// The real thing, in a child (the test process keeps its mask): rank 1 of 2 with GANTRY_BIND=core
// ends up on the second half of its CPUs, and LocalRankBound() says so.
TEST(CpuBinding, BindLocalRankSetsTheAffinityOfTheProcess) {
  cpu_set_t set;
  ASSERT_EQ(sched_getaffinity(0, sizeof(set), &set), 0);
  const int allowed = CPU_COUNT(&set);
  if (allowed < 2) GTEST_SKIP() << "needs 2 CPUs";
  const pid_t pid = fork();
  if (pid == 0) {
    setenv("LOCAL_RANK", "1", 1);
    setenv("LOCAL_WORLD_SIZE", "2", 1);
    setenv("GANTRY_BIND", "core", 1);
    auto p = BindLocalRank();
    cpu_set_t now;
    sched_getaffinity(0, sizeof(now), &now);
    const bool ok = p.ok() && p->bind && LocalRankBound() && CPU_COUNT(&now) == allowed / 2 &&
                    CPU_ISSET(p->cpus.front(), &now);
    _exit(ok ? 0 : 1);
  }
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  EXPECT_FALSE(LocalRankBound());  // this process was not touched
}

TEST(CpuBinding, InlineReduceAutoOnlyForShmWithoutASpareCpu) {
  EXPECT_TRUE(DataParallel::InlineReduceAuto("shm", /*spare_cpu=*/false));
  EXPECT_FALSE(DataParallel::InlineReduceAuto("shm", true));
  EXPECT_FALSE(DataParallel::InlineReduceAuto("tcp", false));  // network waits overlap compute
  EXPECT_FALSE(DataParallel::InlineReduceAuto("hier", false));
}

}  // namespace
}  // namespace gantry::train
