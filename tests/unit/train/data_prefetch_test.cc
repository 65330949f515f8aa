// PrefetchingDataSource: the same batches and positions as the source it wraps (across epoch
// boundaries), Restore mid-run continues exactly where the plain source would, and an error of
// the inner source reaches the Next that would have returned that batch, naming it.
#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <thread>

#include "tests/unit/train/train_test_util.h"
#include "train/data.h"
#include "train/data_prefetch.h"

namespace gantry::train {
namespace {

constexpr int kBatch = 4;

std::unique_ptr<DataSource> Synthetic(const ModelSpec& m, int64_t samples) {
  DataSpec d;
  d.uri = "synthetic";
  d.seed = 5;
  d.synthetic_samples = samples;
  auto s = OpenDataSource(d, m, {kBatch, d.seed, 0, 1});
  EXPECT_TRUE(s.ok()) << s.status().ToString();
  return std::move(s).value();
}

bool SameBatch(const Batch& a, const Batch& b) {
  return std::memcmp(a.inputs.raw(), b.inputs.raw(), a.inputs.nbytes()) == 0 &&
         std::memcmp(a.targets.raw(), b.targets.raw(), a.targets.nbytes()) == 0;
}

TEST(PrefetchTest, SameBatchesAndPositionsAsTheInnerSource) {
  for (const ModelSpec& m : {testing::TinyMlp(), testing::TinyGpt()}) {
    const BatchLayout layout = *BatchLayoutFor(m, kBatch);
    auto plain = Synthetic(m, 22);  // 5 batches per epoch: 25 steps cross 4 epoch boundaries
    auto pre = PrefetchingDataSource::Wrap(Synthetic(m, 22), layout);
    ASSERT_TRUE(pre.ok()) << pre.status().ToString();
    EXPECT_EQ((*pre)->position(), plain->position());
    Batch a = *AllocateBatch(layout, kernels::Device::Cpu());
    Batch b = *AllocateBatch(layout, kernels::Device::Cpu());
    for (int step = 0; step < 25; ++step) {
      ASSERT_TRUE(plain->Next(a).ok());
      ASSERT_TRUE((*pre)->Next(b).ok());
      ASSERT_TRUE(SameBatch(a, b)) << m.type << " step " << step;
      // What a checkpoint stores: after the returned batch, not after the prefetched one.
      ASSERT_EQ((*pre)->position(), plain->position()) << m.type << " step " << step;
    }
    EXPECT_EQ((*pre)->batches_per_epoch(), plain->batches_per_epoch());
  }
}

// Next swaps buffers instead of copying: the batch it returns must not change while the
// producer fills the next one, and a batch of another layout is refused, not overrun.
TEST(PrefetchTest, HandedOverBatchStaysIntactAndOtherLayoutsAreRefused) {
  const ModelSpec m = testing::TinyMlp();
  const BatchLayout layout = *BatchLayoutFor(m, kBatch);
  auto plain = Synthetic(m, 22);
  auto pre = std::move(PrefetchingDataSource::Wrap(Synthetic(m, 22), layout)).value();
  Batch a = *AllocateBatch(layout, kernels::Device::Cpu());
  Batch b = *AllocateBatch(layout, kernels::Device::Cpu());
  ASSERT_TRUE(plain->Next(a).ok());
  ASSERT_TRUE(pre->Next(b).ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(50));  // the producer ran meanwhile
  EXPECT_TRUE(SameBatch(a, b));
  const BatchLayout other = *BatchLayoutFor(m, kBatch + 1);
  Batch c = *AllocateBatch(other, kernels::Device::Cpu());
  Status s = pre->Next(c);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s.ToString();
  ASSERT_TRUE(plain->Next(a).ok());
  ASSERT_TRUE(pre->Next(b).ok()) << "the refused call consumed nothing";
  EXPECT_TRUE(SameBatch(a, b));
}

TEST(PrefetchTest, RestoreContinuesExactly) {
  const ModelSpec m = testing::TinyMlp();
  const BatchLayout layout = *BatchLayoutFor(m, kBatch);
  auto pre = std::move(PrefetchingDataSource::Wrap(Synthetic(m, 40), layout)).value();
  Batch got = *AllocateBatch(layout, kernels::Device::Cpu());
  Batch want = *AllocateBatch(layout, kernels::Device::Cpu());
  for (int i = 0; i < 7; ++i) ASSERT_TRUE(pre->Next(got).ok());
  const DataPosition at = pre->position();  // a prefetched batch is in flight here
  ASSERT_TRUE(pre->Next(got).ok());
  ASSERT_TRUE(pre->Next(got).ok());
  ASSERT_TRUE(pre->Restore(at).ok());  // as a resume from a checkpoint taken at `at`
  EXPECT_EQ(pre->position(), at);
  auto plain = Synthetic(m, 40);
  ASSERT_TRUE(plain->Restore(at).ok());
  for (int i = 0; i < 12; ++i) {
    ASSERT_TRUE(plain->Next(want).ok());
    ASSERT_TRUE(pre->Next(got).ok());
    ASSERT_TRUE(SameBatch(want, got)) << "batch " << i << " after the restore";
  }
  EXPECT_EQ(pre->Restore({999, 0}).code(), plain->Restore({999, 0}).code());
}

// Fails at its third batch, like a corrupt record in a file.
class FailingSource : public DataSource {
 public:
  Status Next(Batch& batch) override {
    if (++served_ == 3) return DataLossError("record 11 of shard 2 is corrupt");
    std::memset(batch.inputs.raw(), served_, batch.inputs.nbytes());
    pos_.batch = uint64_t(served_);
    return OkStatus();
  }
  DataPosition position() const override { return pos_; }
  Status Restore(const DataPosition& p) override {
    pos_ = p;
    served_ = int(p.batch);
    return OkStatus();
  }
  int64_t batches_per_epoch() const override { return 100; }
  std::string description() const override { return "failing"; }

 private:
  int served_ = 0;
  DataPosition pos_;
};

TEST(PrefetchTest, InnerErrorsReachTheNextThatWouldHaveReturnedTheBatch) {
  const BatchLayout layout = *BatchLayoutFor(testing::TinyMlp(), kBatch);
  auto pre =
      std::move(PrefetchingDataSource::Wrap(std::make_unique<FailingSource>(), layout)).value();
  Batch b = *AllocateBatch(layout, kernels::Device::Cpu());
  ASSERT_TRUE(pre->Next(b).ok());
  ASSERT_TRUE(pre->Next(b).ok());
  EXPECT_EQ(pre->position().batch, 2u);
  for (int i = 0; i < 2; ++i) {  // and it stays failed
    Status s = pre->Next(b);
    EXPECT_EQ(s.code(), StatusCode::kDataLoss);
    EXPECT_NE(s.message().find("record 11 of shard 2"), std::string::npos) << s.ToString();
  }
  EXPECT_EQ(pre->position().batch, 2u);  // nothing consumed past the last good batch
  ASSERT_TRUE(pre->Restore({0, 3}).ok());  // a restore starts a fresh producer
  EXPECT_TRUE(pre->Next(b).ok());
  EXPECT_EQ(pre->description(), "failing, prefetched");
}

}  // namespace
}  // namespace gantry::train
