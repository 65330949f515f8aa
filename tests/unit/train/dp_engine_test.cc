// Data-parallel engine pieces with ranks as threads of this process (tcp and shm over a
// MemoryStore): the bucket plan, bucketed gradient sums (f32, bf16, ZeRO-1 pieces), the
// parameter broadcast, divergence detection naming the rank, and the straggler report.
// Whole-job equivalence and resume run as processes in tests/integration/dp_train_test.cc.
#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <cstring>
#include <functional>
#include <thread>

#include "comm/factory.h"
#include "kernels/runtime.h"
#include "tests/unit/train/train_test_util.h"
#include "train/bucket_reducer.h"
#include "train/data_parallel.h"
#include "train/launch.h"

namespace gantry::train {
namespace {

using std::chrono::milliseconds;

void RunRanks(const std::string& backend, int world,
              const std::function<void(comm::Communicator&)>& fn,
              size_t shm_window_min_bytes = comm::CommOptions().shm_window_min_bytes,
              milliseconds timeout = milliseconds(20000)) {
  auto store = std::make_shared<comm::MemoryStore>();
  std::vector<std::thread> threads;
  for (int r = 0; r < world; ++r) {
    threads.emplace_back([&, r] {
      comm::Bootstrap boot(r, world, store);
      comm::CommOptions o;
      o.backend = backend;
      o.timeout = timeout;
      o.shm_window_min_bytes = shm_window_min_bytes;
      auto c = comm::CreateCommunicator(o, boot);
      ASSERT_TRUE(c.ok()) << c.status().ToString();
      fn(**c);
    });
  }
  for (auto& t : threads) t.join();
}

std::unique_ptr<Model> TinyGptModel(int batch = 2) {
  auto m = Model::Create(testing::TinyGpt(), batch, kernels::Device::Cpu());
  EXPECT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_TRUE((*m)->InitParams(7).ok());
  return std::move(m).value();
}

TEST(PlanBucketsTest, CoversTheBufferFromTheEndAtParameterBoundaries) {
  auto model = TinyGptModel();
  const auto& params = model->params();
  const int64_t n = model->num_params();
  std::vector<Bucket> b = PlanBuckets(params, /*bucket_elems=*/600, /*first=*/100, /*world=*/3);
  ASSERT_GT(b.size(), 2u);
  EXPECT_EQ(b.front().end, n);
  EXPECT_EQ(b.back().begin, 0);
  int64_t staging = 0, shard = 0;
  for (size_t i = 0; i < b.size(); ++i) {
    if (i > 0) EXPECT_EQ(b[i].end, b[i - 1].begin) << "bucket " << i;
    bool at_param = false;
    for (const ParamInfo& p : params) at_param |= p.offset == b[i].begin;
    EXPECT_TRUE(at_param) << "bucket " << i << " starts inside a parameter";
    if (i + 1 < b.size()) EXPECT_GE(b[i].size(), i == 0 ? 100 : 600) << "bucket " << i;
    EXPECT_EQ(b[i].piece, (b[i].size() + 2) / 3);
    EXPECT_EQ(b[i].staging, staging);
    EXPECT_EQ(b[i].shard, shard);
    staging += 3 * b[i].piece;
    shard += b[i].piece;
    EXPECT_EQ(b[i].OwnedBegin(0), b[i].begin);
    EXPECT_EQ(b[i].OwnedEnd(2), b[i].end);
  }
  // One huge bucket: everything in one piece of work.
  std::vector<Bucket> one = PlanBuckets(params, n * 10, n * 10, 1);
  ASSERT_EQ(one.size(), 1u);
  EXPECT_EQ(one[0].size(), n);
}

TEST(PlanBucketsTest, SplitsBucketsLargerThanTheMaxIntoEqualChunks) {
  auto model = TinyGptModel();
  const auto& params = model->params();
  const int64_t n = model->num_params();
  const int64_t max_elems = 160;
  std::vector<Bucket> b = PlanBuckets(params, 600, 100, 2, max_elems);
  std::vector<Bucket> whole = PlanBuckets(params, 600, 100, 2);
  ASSERT_GT(b.size(), whole.size());
  EXPECT_EQ(b.front().end, n);
  EXPECT_EQ(b.back().begin, 0);
  for (size_t i = 0; i < b.size(); ++i) {
    if (i > 0) EXPECT_EQ(b[i].end, b[i - 1].begin) << "bucket " << i;
    EXPECT_LE(b[i].size(), max_elems) << "bucket " << i;
    EXPECT_GT(b[i].size(), 0) << "bucket " << i;
  }
  // Every unsplit bucket's ends are still chunk ends, and chunks of one bucket are equal
  // multiples of 16 except the lowest one.
  for (const Bucket& w : whole) {
    int64_t chunks = 0, size = -1;
    for (const Bucket& c : b) {
      if (c.begin < w.begin || c.end > w.end) continue;
      ++chunks;
      if (c.begin != w.begin) {
        EXPECT_EQ(c.size() % 16, 0);
        if (size >= 0) EXPECT_EQ(c.size(), size);
        size = c.size();
      }
    }
    EXPECT_EQ(chunks, (w.size() + max_elems - 1) / max_elems) << "bucket at " << w.begin;
  }
}

TEST(DataParallelTest, DivergedRanksAndStragglersArePicked) {
  EXPECT_TRUE(DataParallel::DivergedRanks({5, 5, 5}).empty());
  EXPECT_EQ(DataParallel::DivergedRanks({5, 5, 9, 5}), (std::vector<int>{2}));
  EXPECT_EQ(DataParallel::DivergedRanks({9, 5, 5}), (std::vector<int>{0}));
  EXPECT_EQ(DataParallel::DivergedRanks({5, 9}), (std::vector<int>{1}));  // tie: rank 0 wins
  // Ties between groups without rank 0: the group of the lowest rank, not the smaller crc.
  EXPECT_EQ(DataParallel::DivergedRanks({1, 9, 9, 3, 3}), (std::vector<int>{0, 3, 4}));
  EXPECT_EQ(DataParallel::DivergedRanks({1, 3, 3, 9, 9}), (std::vector<int>{0, 3, 4}));
  std::vector<StepTimes> t = {{1.0, 0.1, 0.5}, {1.0, 0.0, 0.4}, {2.0, 0.0, 0.0}, {1.1, 0.0, 0.3}};
  EXPECT_EQ(DataParallel::FindStragglers(t, 1.5), (std::vector<int>{2}));
  t[2].compute = 1.5;  // 1.5 < 1.5 x 1.1
  EXPECT_TRUE(DataParallel::FindStragglers(t, 1.5).empty());
  EXPECT_EQ(DataParallel::FindStragglers({{1.0, 0, 0}, {0.5, 1.2, 0}}, 1.5),
            (std::vector<int>{1}));  // data wait counts as the rank's own time
}

class Backends : public ::testing::TestWithParam<std::string> {};

// Grads of rank r are (r + 1) * (i % 97) / 97: the sum over 3 ranks is 6 * (i % 97) / 97.
void FillGrads(Model& m, int rank) {
  float* g = m.flat_grads().f32();
  for (int64_t i = 0; i < m.num_params(); ++i) g[i] = float(rank + 1) * float(i % 97) / 97.0f;
}

TEST_P(Backends, BucketsSumWhileBackwardReportsThem) {
  for (int mode = 0; mode < 3; ++mode) {  // f32 allreduce, bf16 allreduce, ZeRO-1 f32
    RunRanks(GetParam(), 3, [&](comm::Communicator& c) {
      auto model = TinyGptModel();
      BucketOptions o;
      o.bucket_bytes = 2400;
      o.first_bucket_bytes = 400;
      o.bf16 = mode == 1;
      o.shard = mode == 2;
      auto red = BucketReducer::Create(c, *model, o);
      ASSERT_TRUE(red.ok()) << red.status().ToString();
      for (int step = 0; step < 2; ++step) {  // buffers are reused across steps
        FillGrads(*model, c.rank());
        (*red)->Arm();
        // Backward reports trailing ranges final, parameter by parameter, from the end.
        for (size_t k = model->params().size(); k-- > 0;) {
          (*red)->OnGradReady(model->params()[k].offset);
        }
        ASSERT_TRUE((*red)->Finish().ok());
        EXPECT_GT((*red)->last_overlapped(), 0);
        const float tol = mode == 1 ? 6.0f / 128 : 1e-6f;  // bf16: 8 bits of mantissa
        if (mode < 2) {
          const float* g = model->flat_grads().f32();
          for (int64_t i = 0; i < model->num_params(); ++i) {
            ASSERT_NEAR(g[i], 6.0f * float(i % 97) / 97.0f, tol) << "element " << i;
          }
          continue;
        }
        const float* s = (*red)->shard_grads().f32();
        for (const Bucket& b : (*red)->buckets()) {
          for (int64_t i = b.OwnedBegin(c.rank()); i < b.OwnedEnd(c.rank()); ++i) {
            ASSERT_NEAR(s[b.shard + i - b.OwnedBegin(c.rank())], 6.0f * float(i % 97) / 97.0f, tol);
          }
        }
      }
    });
  }
}

TEST_P(Backends, BroadcastThenCorruptedRankIsNamed) {
  RunRanks(GetParam(), 3, [&](comm::Communicator& c) {
    auto model = TinyGptModel();
    model->flat_params().f32()[3] = float(c.rank());  // ranks start different
    OptimizerSpec os;
    DataParallelOptions o;
    o.check_every = 1;
    auto dp = DataParallel::Create(c, *model, os, o);
    ASSERT_TRUE(dp.ok()) << dp.status().ToString();
    ASSERT_TRUE((*dp)->BroadcastFromRank0({}).ok());
    EXPECT_EQ(model->flat_params().f32()[3], 0.0f);
    ASSERT_TRUE((*dp)->CheckParameters(1).ok());
    if (c.rank() == 2) model->flat_params().f32()[100] += 1e-3f;
    Status s = (*dp)->CheckParameters(2);
    EXPECT_EQ(s.code(), StatusCode::kDataLoss) << s.ToString();
    EXPECT_NE(s.message().find("rank(s) 2 differ"), std::string::npos) << s.ToString();
    EXPECT_NE(s.message().find("step 2"), std::string::npos) << s.ToString();
  });
}

// Checkpoint I/O on rank 0 may outlast the comm timeout (a big checkpoint on Ceph): the other
// ranks wait for it through rank 0's ticks instead of failing it as stuck (they did, and the
// restart then timed out the same way while rank 0 read the checkpoint back).
TEST_P(Backends, RanksWaitForRank0sWorkLongerThanTheTimeout) {
  const milliseconds timeout(1000);
  std::atomic<int64_t> work_end_ns{0};  // the ranks are threads of this process
  RunRanks(GetParam(), 3, [&](comm::Communicator& c) {
    auto model = TinyGptModel();
    OptimizerSpec os;
    DataParallelOptions o;
    o.timeout = timeout;
    o.check_every = 1;
    auto dp = DataParallel::Create(c, *model, os, o);
    ASSERT_TRUE(dp.ok()) << dp.status().ToString();
    bool ran = false;
    auto now_ns = [] {
      return std::chrono::duration_cast<std::chrono::nanoseconds>(
                 std::chrono::steady_clock::now().time_since_epoch())
          .count();
    };
    Status s = (*dp)->WhileRank0Works([&] {
      ran = true;
      std::this_thread::sleep_for(timeout * 3);
      work_end_ns = now_ns();
      return NotFoundError("rank 0's own outcome");
    });
    const int64_t returned_ns = now_ns();
    EXPECT_EQ(ran, c.rank() == 0);
    if (c.rank() == 0) {
      EXPECT_EQ(s.code(), StatusCode::kNotFound) << s.ToString();
    } else {
      EXPECT_TRUE(s.ok()) << s.ToString();
      EXPECT_NE(work_end_ns.load(), 0) << "returned before rank 0 finished";
      EXPECT_GE(returned_ns, work_end_ns.load()) << "returned before rank 0 finished";
    }
    // The communicator is intact: the next collective works on every rank.
    EXPECT_TRUE((*dp)->CheckParameters(1).ok());
  }, comm::CommOptions().shm_window_min_bytes, timeout);
}

TEST_P(Backends, StragglerIsNamedOnEveryRank) {
  RunRanks(GetParam(), 2, [&](comm::Communicator& c) {
    auto model = TinyGptModel();
    DataParallelOptions o;
    o.straggler_every = 2;
    auto dp = DataParallel::Create(c, *model, OptimizerSpec{}, o);
    ASSERT_TRUE(dp.ok());
    const StepTimes t{c.rank() == 1 ? 0.9 : 0.3, 0.0, 0.0};
    ASSERT_TRUE((*dp)->RecordStep(1, t).ok());
    ASSERT_TRUE((*dp)->RecordStep(2, t).ok());
    EXPECT_EQ((*dp)->last_stragglers(), (std::vector<int>{1}));
    const StepTimes even{0.3, 0.0, 0.0};
    ASSERT_TRUE((*dp)->RecordStep(3, even).ok());
    ASSERT_TRUE((*dp)->RecordStep(4, even).ok());
    EXPECT_TRUE((*dp)->last_stragglers().empty());
  });
}

struct Replica {
  std::unique_ptr<Model> model;
  std::unique_ptr<Optimizer> optimizer;  // null with ZeRO-1
  std::unique_ptr<DataParallel> dp;
};

Replica MakeReplica(comm::Communicator& c, const OptimizerSpec& os, bool zero1, bool overlap) {
  Replica r;
  r.model = TinyGptModel();
  DataParallelOptions o;
  o.bucket_bytes = 2400;
  o.first_bucket_bytes = 400;
  o.max_bucket_bytes = 640;  // splits the embedding's bucket into chunks
  o.zero1 = zero1;
  o.overlap_update = overlap;
  auto dp = DataParallel::Create(c, *r.model, os, o);
  EXPECT_TRUE(dp.ok()) << dp.status().ToString();
  r.dp = std::move(dp).value();
  if (!zero1) r.optimizer = std::move(Optimizer::Create(os, *r.model)).value();
  return r;
}

StatusOr<float> Step(Replica& r, int rank, int step) {
  Model& m = *r.model;
  r.dp->BeginBackward();
  float* g = m.flat_grads().f32();
  for (int64_t i = 0; i < m.num_params(); ++i) {
    g[i] = r.dp->loss_scale() * float((i * 7 + rank * 13 + step * 5) % 101 - 50) / 500.0f;
  }
  return r.dp->ReduceAndUpdate(r.optimizer.get(), step, 1e-2f);
}

// The overlapped step (update bucket by bucket as sums arrive) gives the same parameters bit
// for bit as reduce-all, then update; with ZeRO-1 too, and ZeRO-1 equals the replicated
// optimizer. ZeRO-1 ranks hold 1/world of the state; a checkpoint gathers it on rank 0 only
// (equal to the replicated state) and a restore scatters it back.
TEST_P(Backends, OverlappedUpdateAndZeroOneMatchTheReplicatedStep) {
  RunRanks(GetParam(), 3, [&](comm::Communicator& c) {
    OptimizerSpec os;
    os.weight_decay = 0.1;
    Replica plain = MakeReplica(c, os, false, false), ovl = MakeReplica(c, os, false, true);
    Replica z = MakeReplica(c, os, true, false), zovl = MakeReplica(c, os, true, true);
    for (int step = 0; step < 3; ++step) {
      std::vector<float> norms;
      for (Replica* r : {&plain, &ovl, &z, &zovl}) {
        auto norm = Step(*r, c.rank(), step);
        ASSERT_TRUE(norm.ok()) << norm.status().ToString();
        norms.push_back(*norm);
      }
      for (float n : norms) EXPECT_NEAR(n, norms[0], 1e-5f * norms[0]);
      const int64_t n = plain.model->num_params();
      const float* want = plain.model->flat_params().f32();
      // Elementwise updates run over other sub-ranges (per bucket, per shard piece); the CPU
      // kernel's vector body and scalar tail may round differently, so allow a few ulps.
      for (Replica* r : {&ovl, &z, &zovl}) {
        const float* got = r->model->flat_params().f32();
        for (int64_t i = 0; i < n; ++i) {
          ASSERT_NEAR(got[i], want[i], 1e-6f * std::fabs(want[i]) + 1e-8f)
              << "element " << i << " step " << step;
        }
      }
    }
    ShardedOptimizer* sh = zovl.dp->sharded();
    ASSERT_NE(sh, nullptr);
    const int64_t shard_bytes = 2 * sh->shard_elems() * 4;  // exp_avg, exp_avg_sq
    EXPECT_EQ(sh->state_bytes(), shard_bytes);
    EXPECT_LT(sh->shard_elems(), plain.model->num_params() / 2);  // 1/3 plus padding
    auto full = sh->GatherState();
    ASSERT_TRUE(full.ok()) << full.status().ToString();
    if (c.rank() != 0) {
      EXPECT_EQ(*full, nullptr);
      EXPECT_EQ(sh->state_bytes(), shard_bytes);
    }
    std::vector<std::vector<float>> saved;
    if (c.rank() == 0) {
      ASSERT_NE(*full, nullptr);
      const OptimizerState& ref = plain.optimizer->state();
      ASSERT_EQ((*full)->size(), ref.size());
      for (size_t k = 0; k < ref.size(); ++k) {
        float* got = (**full)[k].second.f32();
        const float* want = ref[k].second.f32();
        for (int64_t i = 0; i < ref[k].second.numel(); ++i) {
          ASSERT_NEAR(got[i], want[i], 1e-5f * std::fabs(want[i]) + 1e-12f) << ref[k].first;
          got[i] *= 2;  // as if a checkpoint held other values
        }
        saved.emplace_back(got, got + ref[k].second.numel());
      }
    }
    ASSERT_TRUE(sh->ScatterStateFromRank0().ok());  // as after a restore
    EXPECT_EQ(sh->state_bytes(), shard_bytes);      // rank 0 released its full copy
    full = sh->GatherState();
    ASSERT_TRUE(full.ok());
    if (c.rank() == 0) {
      for (size_t k = 0; k < saved.size(); ++k) {
        ASSERT_EQ(std::memcmp((**full)[k].second.f32(), saved[k].data(), saved[k].size() * 4), 0);
      }
      sh->ReleaseFullState();
      EXPECT_EQ(sh->state_bytes(), shard_bytes);
    }
  });
}

// The production step: gradients in symmetric memory (shm: reduced without staging copies,
// every bucket size taking that path here) and each bucket updated from inside backward as
// soon as its sum is there, against gradients in ordinary memory updated after backward. Real
// Forward/Backward, so backward keeps reading parameters while earlier buckets are updated.
// Parameters must match bit for bit, and so must the gradient norms.
// With inline_reduce every bucket finished during backward is updated there (deterministic);
// without it, whatever the progress thread finished in time.
// On shm the fused sum (no collective: each rank's update sums every rank's gradients) is
// checked against the same plain step, and so is the window allreduce it replaces.
TEST_P(Backends, InBackwardUpdatesOnSymmetricGradientsMatchThePlainStep) {
  for (bool fused : {true, false}) {
  for (bool inline_reduce : {true, false}) {
  if (fused && !inline_reduce) continue;  // the fused sum has no progress-thread variant
  RunRanks(GetParam(), 3, [&](comm::Communicator& c) {
    OptimizerSpec os;
    os.weight_decay = 0.1;
    Replica plain, fast;
    for (Replica* r : {&plain, &fast}) {
      r->model = TinyGptModel();
      DataParallelOptions o;
      o.bucket_bytes = 2400;
      o.first_bucket_bytes = 400;
      o.max_bucket_bytes = 640;
      o.symmetric_grads = r == &fast;
      o.inline_reduce = r == &fast && inline_reduce;
      o.fused_sum = r == &fast && fused;
      auto dp = DataParallel::Create(c, *r->model, os, o);
      ASSERT_TRUE(dp.ok()) << dp.status().ToString();
      r->dp = std::move(dp).value();
      r->optimizer = std::move(Optimizer::Create(os, *r->model)).value();
    }
    EXPECT_EQ(fast.dp->symmetric_grads(), GetParam() == "shm");
    EXPECT_FALSE(plain.dp->symmetric_grads());
    EXPECT_EQ(fast.dp->fused_sum(), fused && GetParam() == "shm");
    EXPECT_FALSE(plain.dp->fused_sum());
    auto layout = BatchLayoutFor(testing::TinyGpt(), 2);
    ASSERT_TRUE(layout.ok());
    auto batch = AllocateBatch(*layout, kernels::Device::Cpu());
    ASSERT_TRUE(batch.ok());
    for (int step = 0; step < 3; ++step) {
      testing::FillBatch(testing::TinyGpt(), *batch, 100 + 10 * step + c.rank());
      std::vector<float> norms;
      for (Replica* r : {&plain, &fast}) {
        const float lr = 1e-2f;
        if (r == &fast) r->dp->BeginBackward(r->optimizer.get(), step, lr);
        else r->dp->BeginBackward();
        ASSERT_TRUE(r->model->Forward(*batch).ok());
        ASSERT_TRUE(r->model->Backward(*batch, r->dp->loss_scale()).ok());
        auto norm = r->dp->ReduceAndUpdate(r->optimizer.get(), step, lr);
        ASSERT_TRUE(norm.ok()) << norm.status().ToString();
        norms.push_back(*norm);
      }
      EXPECT_EQ(norms[0], norms[1]) << "step " << step;
      const kernels::Tensor& a = plain.model->flat_params();
      ASSERT_EQ(std::memcmp(a.raw(), fast.model->flat_params().raw(), a.nbytes()), 0)
          << "step " << step << (inline_reduce ? " (inline)" : "") << (fused ? " (fused)" : "");
    }
  }, /*shm_window_min_bytes=*/0);
  }
  }
}

// The fused sum on an mlp with momentum over 2 ranks, twice on one communicator (the second
// DataParallel must start counting from the signals the first one raised): the same bits as
// reducing with the allreduce first. Its flat_grads() keep the rank's own gradients, and
// asking for reduced gradients in a fused step is refused.
TEST(DataParallelTest, FusedSumContinuesOnAReusedCommunicator) {
  ModelSpec spec = testing::TinyMlp("relu");
  spec.widths = {40, 300, 200, 6};  // several buckets of 4 KiB
  OptimizerSpec os;
  os.type = "momentum";
  os.lr = 0.05;
  RunRanks("shm", 2, [&](comm::Communicator& c) {
    auto layout = BatchLayoutFor(spec, 4);
    ASSERT_TRUE(layout.ok());
    auto batch = AllocateBatch(*layout, kernels::Device::Cpu());
    ASSERT_TRUE(batch.ok());
    for (int round = 0; round < 2; ++round) {
      Replica plain, fused;
      for (Replica* r : {&plain, &fused}) {
        auto m = Model::Create(spec, 4, kernels::Device::Cpu());
        ASSERT_TRUE(m.ok() && (*m)->InitParams(3 + round).ok());
        r->model = std::move(m).value();
        DataParallelOptions o;
        o.bucket_bytes = 4096;
        o.first_bucket_bytes = 1024;
        o.max_bucket_bytes = 4096;
        o.fused_sum = r == &fused;
        auto dp = DataParallel::Create(c, *r->model, os, o);
        ASSERT_TRUE(dp.ok()) << dp.status().ToString();
        r->dp = std::move(dp).value();
        r->optimizer = std::move(Optimizer::Create(os, *r->model)).value();
      }
      ASSERT_TRUE(fused.dp->fused_sum());
      ASSERT_FALSE(plain.dp->fused_sum());
      ASSERT_GT(fused.dp->buckets().size(), 3u);
      for (int step = 0; step < 4; ++step) {
        testing::FillBatch(spec, *batch, 50 * round + 10 * step + c.rank());
        std::vector<float> norms;
        for (Replica* r : {&plain, &fused}) {
          r->dp->BeginBackward(r->optimizer.get(), step, 0.05f);
          ASSERT_TRUE(r->model->Forward(*batch).ok());
          ASSERT_TRUE(r->model->Backward(*batch, r->dp->loss_scale()).ok());
          if (r == &fused) {
            Status s = r->dp->ReduceGradients();
            EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition) << s.ToString();
          }
          auto norm = r->dp->ReduceAndUpdate(r->optimizer.get(), step, 0.05f);
          ASSERT_TRUE(norm.ok()) << norm.status().ToString();
          norms.push_back(*norm);
          EXPECT_GE(r->dp->last_comm_wait(), 0.0);
        }
        EXPECT_EQ(norms[0], norms[1]) << "round " << round << " step " << step;
        const kernels::Tensor& a = plain.model->flat_params();
        ASSERT_EQ(std::memcmp(a.raw(), fused.model->flat_params().raw(), a.nbytes()), 0)
            << "round " << round << " step " << step;
        // plain holds the sum, fused this rank's own share: they differ somewhere.
        const kernels::Tensor& ga = plain.model->flat_grads();
        EXPECT_NE(std::memcmp(ga.raw(), fused.model->flat_grads().raw(), ga.nbytes()), 0);
      }
    }
  }, /*shm_window_min_bytes=*/0);
}

INSTANTIATE_TEST_SUITE_P(Host, Backends, ::testing::Values("tcp", "shm"));

// GANTRY_DP_MAX_BUCKET_KB unset: 4 MiB buckets when they are reduced inline (no overlap to win
// with small ones, one rendezvous per bucket), 1 MiB otherwise; set, it is taken as given.
TEST(DataParallelTest, MaxBucketFollowsInlineReduction) {
  ::unsetenv("GANTRY_DP_MAX_BUCKET_KB");
  EXPECT_FALSE(DataParallelOptions::FromSpec(CommSpec()).max_bucket_bytes.has_value());
  ::setenv("GANTRY_DP_MAX_BUCKET_KB", "256", 1);
  EXPECT_EQ(DataParallelOptions::FromSpec(CommSpec()).max_bucket_bytes, size_t(256) << 10);
  ::unsetenv("GANTRY_DP_MAX_BUCKET_KB");
  ModelSpec spec = testing::TinyMlp();
  spec.widths = {1024, 1536, 10};  // 1.59M parameters, 6.3 MB of gradients
  RunRanks("shm", 2, [&](comm::Communicator& c) {
    size_t largest[2] = {0, 0}, count[2] = {0, 0};
    for (bool inline_reduce : {false, true}) {
      auto model = Model::Create(spec, 2, kernels::Device::Cpu());
      ASSERT_TRUE(model.ok()) << model.status().ToString();
      DataParallelOptions o;
      o.inline_reduce = inline_reduce;
      auto dp = DataParallel::Create(c, **model, OptimizerSpec(), o);
      ASSERT_TRUE(dp.ok()) << dp.status().ToString();
      for (const Bucket& b : (*dp)->buckets()) {
        largest[inline_reduce] = std::max(largest[inline_reduce], size_t(b.size()) * 4);
      }
      count[inline_reduce] = (*dp)->buckets().size();
    }
    EXPECT_LE(largest[0], size_t(1) << 20);
    EXPECT_LE(largest[1], size_t(4) << 20);
    EXPECT_GT(largest[1], size_t(1) << 20);
    EXPECT_LT(count[1], count[0]);
  });
}

TEST(LaunchTest, ModeComesFromTheEnvironment) {
  for (const char* v : {"GANTRY_TOKEN", "RANK", "JOB_COMPLETION_INDEX", "WORLD_SIZE",
                        "OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK"}) {
    ::unsetenv(v);
  }
  EXPECT_EQ(DetectLaunchMode(), LaunchMode::kSingle);
  ::setenv("JOB_COMPLETION_INDEX", "1", 1);
  ::setenv("WORLD_SIZE", "4", 1);
  EXPECT_EQ(DetectLaunchMode(), LaunchMode::kEnv);
  ::setenv("GANTRY_TOKEN", "t", 1);
  EXPECT_EQ(DetectLaunchMode(), LaunchMode::kCoordinator);
  ::unsetenv("GANTRY_TOKEN");
  ::unsetenv("JOB_COMPLETION_INDEX");
  ::setenv("OMPI_COMM_WORLD_SIZE", "2", 1);
  EXPECT_EQ(DetectLaunchMode(), LaunchMode::kMpi);
  ::unsetenv("OMPI_COMM_WORLD_SIZE");
  ::unsetenv("WORLD_SIZE");
  JobSpec spec;
  ::setenv("GANTRY_TOKEN", "t", 1);
  auto launch = ConnectRanks(spec, LaunchOptions{});  // no coordinator bootstrap supplied
  ::unsetenv("GANTRY_TOKEN");
  EXPECT_EQ(launch.status().code(), StatusCode::kFailedPrecondition);
}

// A one-process launch whose environment claims otherwise is refused, not run as rank 0.
TEST(LaunchTest, ContradictoryRankEnvironmentIsRefused) {
  for (const char* v : {"GANTRY_TOKEN", "RANK", "JOB_COMPLETION_INDEX", "WORLD_SIZE",
                        "OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK"}) {
    ::unsetenv(v);
  }
  JobSpec spec;
  ::setenv("RANK", "5", 1);
  ::setenv("WORLD_SIZE", "1", 1);
  auto launch = ConnectRanks(spec, LaunchOptions{});
  EXPECT_EQ(launch.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(launch.status().message().find("RANK=5"), std::string::npos)
      << launch.status().ToString();
  ::unsetenv("RANK");
  ::setenv("WORLD_SIZE", "2", 1);
  launch = ConnectRanks(spec, LaunchOptions{});
  EXPECT_EQ(launch.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(launch.status().message().find("neither RANK"), std::string::npos)
      << launch.status().ToString();
  ::setenv("WORLD_SIZE", "1", 1);
  ::setenv("RANK", "0", 1);
  launch = ConnectRanks(spec, LaunchOptions{});
  EXPECT_TRUE(launch.ok()) << launch.status().ToString();
  EXPECT_EQ(launch->mode, LaunchMode::kSingle);
  ::unsetenv("RANK");
  ::unsetenv("WORLD_SIZE");
}

}  // namespace
}  // namespace gantry::train
