// The data-parallel engine on a GPU over NCCL (label gpu; skips without a GPU; built into
// train_gpu_test only when NCCL was found, tests/gpu/CMakeLists.txt). NCCL
// refuses two ranks on one device, so on a one-GPU machine this drives a one-rank group
// straight through DataParallel (the trainer skips the engine at world size 1): buckets
// reduced by NCCL on the communicator's stream after backward's work, the optimizer applied
// per bucket, bf16 gradient compression and ZeRO-1, the rank-0 broadcast and the parameter
// checksum. With one rank every sum is the rank's own gradient, so each variant must give the
// plain optimizer step's parameters (bit for bit where the arithmetic is the same).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <memory>
#include <vector>

#include "comm/nccl/nccl_communicator.h"
#include "kernels/runtime.h"
#include "tests/unit/train/train_test_util.h"
#include "train/data_parallel.h"
#include "train/optimizer.h"

namespace gantry::train {
namespace {

std::vector<float> HostCopy(const kernels::Tensor& t) {
  auto host = kernels::Tensor::Empty(t.shape(), t.dtype(), kernels::Device::Cpu());
  EXPECT_TRUE(host.ok());
  EXPECT_TRUE(kernels::Copy(t, *host).ok());
  return std::vector<float>(host->f32(), host->f32() + host->numel());
}

struct Replica {
  std::unique_ptr<Model> model;
  std::unique_ptr<Optimizer> optimizer;
  std::unique_ptr<DataParallel> dp;
};

class GpuDataParallel : public ::testing::Test {
 protected:
  void SetUp() override {
    if (kernels::CudaDeviceCount() == 0) GTEST_SKIP() << "no CUDA device";
    comm::Bootstrap boot(0, 1, std::make_shared<comm::MemoryStore>());
    comm::CommOptions o;
    o.cuda = true;
    o.timeout = std::chrono::seconds(60);
    auto c = comm::NcclCommunicator::Create(boot, o);
    ASSERT_TRUE(c.ok()) << c.status().ToString();
    comm_ = std::move(c).value();
  }
  Replica Make(const OptimizerSpec& os, std::optional<DataParallelOptions> dpo) {
    Replica r;
    auto m = Model::Create(testing::TinyGpt(64, 16), 4, kernels::Device::Cuda(0));
    EXPECT_TRUE(m.ok()) << m.status().ToString();
    r.model = std::move(m).value();
    EXPECT_TRUE(r.model->InitParams(11).ok());
    r.optimizer = std::move(Optimizer::Create(os, *r.model)).value();
    if (dpo) {
      auto dp = DataParallel::Create(*comm_, *r.model, os, *dpo);
      EXPECT_TRUE(dp.ok()) << dp.status().ToString();
      if (dp.ok()) r.dp = std::move(dp).value();
    }
    return r;
  }
  std::unique_ptr<comm::NcclCommunicator> comm_;
};

// Three steps of the plain optimizer and of the engine in each configuration, same batches.
TEST_F(GpuDataParallel, OneRankStepsMatchThePlainOptimizer) {
  OptimizerSpec os;
  os.type = "adamw";
  os.lr = 1e-2;
  os.weight_decay = 0.1;
  struct Case {
    const char* name;
    DataParallelOptions o;
    bool exact;  // same arithmetic as the plain step
  };
  std::vector<Case> cases;
  {
    DataParallelOptions o;
    o.bucket_bytes = 4096;  // several buckets
    cases.push_back({"buckets", o, true});
    o.bf16_reduce = true;  // the sum goes through bf16: close, not equal
    cases.push_back({"bf16_reduce", o, false});
    o.bf16_reduce = false;
    o.zero1 = true;
    cases.push_back({"zero1", o, true});
  }
  auto layout = BatchLayoutFor(testing::TinyGpt(64, 16), 4);
  ASSERT_TRUE(layout.ok());
  auto host = AllocateBatch(*layout, kernels::Device::Cpu());
  auto dev = AllocateBatch(*layout, kernels::Device::Cuda(0));
  ASSERT_TRUE(host.ok() && dev.ok());
  for (const Case& c : cases) {
    Replica plain = Make(os, std::nullopt), dp = Make(os, c.o);
    ASSERT_NE(dp.dp, nullptr) << c.name;
    ASSERT_TRUE(dp.dp->BroadcastFromRank0({}).ok()) << c.name;
    for (int step = 0; step < 3; ++step) {
      testing::FillBatch(testing::TinyGpt(64, 16), *host, 500 + step);
      ASSERT_TRUE(kernels::Copy(host->inputs, dev->inputs).ok());
      ASSERT_TRUE(kernels::Copy(host->targets, dev->targets).ok());
      const float lr = 1e-2f;
      ASSERT_TRUE(plain.model->Forward(*dev).ok());
      ASSERT_TRUE(plain.model->Backward(*dev).ok());
      ASSERT_TRUE(plain.optimizer->Step(step, lr).ok());
      dp.dp->BeginBackward(dp.optimizer.get(), step, lr);
      ASSERT_TRUE(dp.model->Forward(*dev).ok());
      ASSERT_TRUE(dp.model->Backward(*dev, dp.dp->loss_scale()).ok());
      auto norm = dp.dp->ReduceAndUpdate(dp.optimizer.get(), step, lr);
      ASSERT_TRUE(norm.ok()) << c.name << ": " << norm.status().ToString();
      EXPECT_TRUE(std::isfinite(*norm) && *norm > 0) << c.name;
    }
    const std::vector<float> a = HostCopy(plain.model->flat_params());
    const std::vector<float> b = HostCopy(dp.model->flat_params());
    ASSERT_EQ(a.size(), b.size());
    if (c.exact) {
      EXPECT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * 4)) << c.name;
    } else {
      double num = 0, den = 0;
      for (size_t i = 0; i < a.size(); ++i) {
        num += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
        den += double(a[i]) * a[i];
      }
      EXPECT_LT(std::sqrt(num / den), 1e-2) << c.name;
    }
    EXPECT_TRUE(dp.dp->CheckParameters(3, /*force=*/true).ok()) << c.name;
  }
}

}  // namespace
}  // namespace gantry::train
