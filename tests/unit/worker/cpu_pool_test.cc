// CpuPool: exclusive lowest-first hand-out, give-back, slots vs allowed CPUs.
#include "worker/cpu_pool.h"

#include <gtest/gtest.h>

namespace gantry::worker {
namespace {

using Cpus = std::vector<int>;

TEST(CpuPool, HandsOutLowestFreeCpusExclusively) {
  CpuPool pool({6, 2, 3, 4, 2});  // duplicates and order do not matter
  EXPECT_EQ(pool.size(), 4u);
  EXPECT_EQ(pool.Take(2), Cpus({2, 3}));
  EXPECT_EQ(pool.Take(1), Cpus({4}));
  EXPECT_EQ(pool.Take(2), std::nullopt) << "only CPU 6 is free";
  EXPECT_EQ(pool.free_count(), 1u) << "a refused Take takes nothing";
  pool.Give({2, 3, 99});  // 99 was never in the pool: ignored
  EXPECT_EQ(pool.free_count(), 3u);
  EXPECT_EQ(pool.Take(3), Cpus({2, 3, 6}));
  EXPECT_EQ(pool.Take(0), std::nullopt);
  EXPECT_EQ(pool.Take(-1), std::nullopt);
}

TEST(CpuPool, SlotsCutTheAllowedSetAndOvercommitTurnsItOff) {
  const Cpus allowed = {1, 3, 5, 7};
  auto all = CpuPool::ForSlots(0, allowed);
  ASSERT_TRUE(all.has_value());
  EXPECT_EQ(all->size(), 4u);
  auto two = CpuPool::ForSlots(2, allowed);
  ASSERT_TRUE(two.has_value());
  EXPECT_EQ(two->Take(2), Cpus({1, 3}));
  EXPECT_FALSE(CpuPool::ForSlots(5, allowed).has_value()) << "5 slots on 4 CPUs";
  EXPECT_FALSE(CpuPool::ForSlots(0, {}).has_value());
}

}  // namespace
}  // namespace gantry::worker
