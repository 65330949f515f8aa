// NCCL backend on a GPU (label gpu; skipped without a CUDA device): one rank per process on
// device 0, every collective on device buffers compared with the expected values.
#include <gtest/gtest.h>

#include <cuda_runtime.h>

#include <vector>

#include "comm/nccl/nccl_communicator.h"

namespace gantry::comm {
namespace {

TEST(Nccl, SingleRankCollectivesOnDeviceBuffers) {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) GTEST_SKIP() << "no CUDA device";
  Bootstrap boot(0, 1, std::make_shared<MemoryStore>());
  CommOptions o;
  o.cuda = true;
  auto c = NcclCommunicator::Create(boot, o);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  const size_t n = (1 << 20) + 3;
  std::vector<float> host(n);
  for (size_t i = 0; i < n; ++i) host[i] = static_cast<float>(i % 97);
  float *a = nullptr, *b = nullptr;
  ASSERT_EQ(cudaMalloc(&a, n * 4), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&b, n * 4), cudaSuccess);
  cudaMemcpy(a, host.data(), n * 4, cudaMemcpyHostToDevice);
  ASSERT_TRUE((*c)->Allreduce(a, b, n, DataType::kF32, ReduceOp::kSum)->Wait().ok());
  ASSERT_TRUE((*c)->Allreduce(b, b, n, DataType::kF32, ReduceOp::kAvg)->Wait().ok());
  ASSERT_TRUE((*c)->Broadcast(b, n, DataType::kF32, 0)->Wait().ok());
  ASSERT_TRUE((*c)->Barrier()->Wait().ok());
  std::vector<float> back(n);
  cudaMemcpy(back.data(), b, n * 4, cudaMemcpyDeviceToHost);
  EXPECT_EQ(back, host);
  EXPECT_TRUE((*c)->AsyncError().ok());
  EXPECT_EQ((*c)->memory(), MemoryKind::kCuda);
  cudaFree(a);
  cudaFree(b);
}

}  // namespace
}  // namespace gantry::comm
