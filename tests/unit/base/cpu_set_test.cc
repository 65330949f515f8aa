// CPU sets: the process's affinity mask, cpu_set_t construction and cpulist strings.
#include "base/cpu_set.h"

#include <gtest/gtest.h>

namespace gantry {
namespace {

TEST(CpuSet, AffinityCpusIsThisProcessMaskAscending) {
  const StatusOr<std::vector<int>> cpus = AffinityCpus();
  ASSERT_TRUE(cpus.ok()) << cpus.status().ToString();
  ASSERT_FALSE(cpus->empty());
  for (size_t i = 1; i < cpus->size(); ++i) EXPECT_LT((*cpus)[i - 1], (*cpus)[i]);
  cpu_set_t mask;
  ASSERT_EQ(sched_getaffinity(0, sizeof(mask), &mask), 0);
  EXPECT_EQ(int(cpus->size()), CPU_COUNT(&mask));
}

TEST(CpuSet, ToCpuSetHoldsTheListAndRefusesOutOfRange) {
  const StatusOr<cpu_set_t> set = ToCpuSet({0, 3, 3});
  ASSERT_TRUE(set.ok());
  EXPECT_EQ(CPU_COUNT(&*set), 2);
  EXPECT_TRUE(CPU_ISSET(0, &*set));
  EXPECT_TRUE(CPU_ISSET(3, &*set));
  for (int bad : {-1, CPU_SETSIZE}) {
    const StatusOr<cpu_set_t> s = ToCpuSet({1, bad});
    ASSERT_FALSE(s.ok());
    EXPECT_EQ(s.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(s.status().message().find("out of range"), std::string::npos);
  }
}

TEST(CpuSet, CpuListStringUsesRanges) {
  EXPECT_EQ(CpuListString({}), "");
  EXPECT_EQ(CpuListString({3}), "3");
  EXPECT_EQ(CpuListString({0, 1, 2, 3, 6, 8, 9}), "0-3,6,8-9");
  EXPECT_EQ(CpuListString({9, 8, 8, 1}), "1,8-9");
}

}  // namespace
}  // namespace gantry
