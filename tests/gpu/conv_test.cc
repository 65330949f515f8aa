// CUDA (cuDNN) vs CPU for 2-D convolution forward/backward with bias, stride and padding (and
// backward giving the same bits twice), and for max/avg pooling forward/backward with
// overlapping windows (argmax indices must match exactly, also with NaNs in the windows).
// Skips without a GPU.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <string>
#include <tuple>

#include "kernels/conv.h"
#include "tests/gpu/gpu_test_util.h"

namespace gantry::kernels::gpu_test {
namespace {

using GpuConv = GpuTest;

TEST_F(GpuConv, Conv2dForwardBackward) {
  for (const Conv2dOptions& o : {Conv2dOptions{1, 0}, Conv2dOptions{2, 1}, Conv2dOptions{1, 2}}) {
    const std::string tag = " stride=" + std::to_string(o.stride) + " pad=" + std::to_string(o.padding);
    const Shape xs{3, 5, 13, 11}, ws{7, 5, 3, 3};
    const Shape ys = Conv2dOutputShape(xs, ws, o);
    Pair x = RandomPair(xs, 1), w = RandomPair(ws, 2), b = RandomPair({7}, 3);
    Pair y = ZeroPair(ys);
    Tensor ws_cpu = Empty({Conv2dWorkspaceElements(xs, ws, o, Device::Cpu()) + 1}, DType::kF32,
                          Device::Cpu());
    Tensor ws_gpu = Empty({Conv2dWorkspaceElements(xs, ws, o, Gpu()) + 1}, DType::kF32, Gpu());
    GANTRY_ASSERT_OK(Conv2dForward(x.cpu, w.cpu, &b.cpu, o, y.cpu, ws_cpu));
    GANTRY_ASSERT_OK(Conv2dForward(x.gpu, w.gpu, &b.gpu, o, y.gpu, ws_gpu));
    ExpectNear(y, kRtol, 1e-5, "y" + tag);
    Pair dy = RandomPair(ys, 4), dx = RandomPair(xs, 5), dw = RandomPair(ws, 6), db = RandomPair({7}, 7);
    GANTRY_ASSERT_OK(Conv2dBackward(x.cpu, w.cpu, dy.cpu, o, &dx.cpu, dw.cpu, &db.cpu, ws_cpu));
    GANTRY_ASSERT_OK(Conv2dBackward(x.gpu, w.gpu, dy.gpu, o, &dx.gpu, dw.gpu, &db.gpu, ws_gpu));
    ExpectNear(dx, kRtol, 1e-5, "dx" + tag);
    ExpectNear(dw, kRtol, 1e-4, "dw" + tag);
    ExpectNear(db, kRtol, 1e-4, "db" + tag);
  }
}

// cuDNN runs only algorithms it reports as deterministic: the same backward twice gives the
// same bits (a resumed GPU run must be byte-identical). Shapes large enough that cuDNN's
// heuristics would otherwise offer atomics-based backward algorithms.
TEST_F(GpuConv, Conv2dBackwardIsDeterministic) {
  const Conv2dOptions o{1, 1};
  const Shape xs{16, 32, 28, 28}, ws{64, 32, 3, 3};
  const Shape ys = Conv2dOutputShape(xs, ws, o);
  Pair x = RandomPair(xs, 21), w = RandomPair(ws, 22), dy = RandomPair(ys, 23);
  Tensor work = Empty({Conv2dWorkspaceElements(xs, ws, o, Gpu()) + 1}, DType::kF32, Gpu());
  Tensor dx[2], dw[2], db[2];
  for (int run = 0; run < 2; ++run) {
    dx[run] = Empty(xs, DType::kF32, Gpu());
    dw[run] = Empty(ws, DType::kF32, Gpu());  // zeroed: the gradients accumulate onto it
    db[run] = Empty({64}, DType::kF32, Gpu());
    GANTRY_ASSERT_OK(Conv2dBackward(x.gpu, w.gpu, dy.gpu, o, &dx[run], dw[run], &db[run], work));
  }
  for (auto [a, b, name] : {std::tuple{&dx[0], &dx[1], "dx"}, std::tuple{&dw[0], &dw[1], "dw"},
                            std::tuple{&db[0], &db[1], "db"}}) {
    Tensor ha = ToHost(*a), hb = ToHost(*b);
    EXPECT_EQ(0, std::memcmp(ha.raw(), hb.raw(), ha.nbytes())) << name << " differs between runs";
  }
}

TEST_F(GpuConv, PoolMaxAndAvgForwardBackward) {
  const Pool2dOptions cases[] = {{PoolKind::kMax, 2, 2, 0}, {PoolKind::kMax, 3, 2, 1},
                                 {PoolKind::kAvg, 2, 2, 0}, {PoolKind::kAvg, 3, 2, 1}};
  for (const Pool2dOptions& o : cases) {
    const std::string tag = std::string(o.kind == PoolKind::kMax ? "max" : "avg") + " k=" +
                            std::to_string(o.kernel) + " s=" + std::to_string(o.stride) +
                            " p=" + std::to_string(o.padding);
    const Shape xs{2, 3, 15, 12};
    const Shape ys = Pool2dOutputShape(xs, o);
    Pair x = RandomPair(xs, 8), y = ZeroPair(ys), idx = ZeroPair(ys, DType::kI32);
    GANTRY_ASSERT_OK(Pool2dForward(x.cpu, o, y.cpu, &idx.cpu));
    GANTRY_ASSERT_OK(Pool2dForward(x.gpu, o, y.gpu, &idx.gpu));
    ExpectNear(y, kRtol, 1e-6, "y " + tag);
    if (o.kind == PoolKind::kMax) ExpectNear(idx, 0.0, 0.0, "indices " + tag);
    Pair dy = RandomPair(ys, 9), dx = RandomPair(xs, 10);  // dx is overwritten
    GANTRY_ASSERT_OK(Pool2dBackward(dy.cpu, &idx.cpu, o, dx.cpu));
    GANTRY_ASSERT_OK(Pool2dBackward(dy.gpu, &idx.gpu, o, dx.gpu));
    ExpectNear(dx, kRtol, 1e-6, "dx " + tag);
  }
}

// NaN in max-pool windows: NaN propagates, and the index is the window's last NaN in scan
// order on both backends (the CUDA kernel scans the whole window as the CPU does). A third of
// the inputs are NaN, so windows hold several NaNs in one row and across rows.
TEST_F(GpuConv, MaxPoolWithNaNsMatchesTheCpuIndices) {
  for (const Pool2dOptions& o : {Pool2dOptions{PoolKind::kMax, 2, 2, 0},
                                 Pool2dOptions{PoolKind::kMax, 3, 2, 1},
                                 Pool2dOptions{PoolKind::kMax, 3, 1, 1}}) {
    const std::string tag = " k=" + std::to_string(o.kernel) + " s=" + std::to_string(o.stride) +
                            " p=" + std::to_string(o.padding);
    const Shape xs{2, 3, 9, 10};
    const Shape ys = Pool2dOutputShape(xs, o);
    Pair x = RandomPair(xs, 11);
    for (int64_t i = 0; i < x.cpu.numel(); ++i) {
      if ((i * 7919) % 3 == 0) x.cpu.f32()[i] = NAN;
    }
    // One window with two NaNs in its first row only (the case the old early exit got wrong).
    float* p0 = x.cpu.f32();
    for (int64_t c = 0; c < 4; ++c) p0[c] = 1.0f;
    for (int64_t c = 0; c < 4; ++c) p0[10 + c] = 1.0f;
    p0[0] = NAN;
    p0[1] = NAN;
    x = MakePair(x.cpu);
    Pair y = ZeroPair(ys), idx = ZeroPair(ys, DType::kI32);
    GANTRY_ASSERT_OK(Pool2dForward(x.cpu, o, y.cpu, &idx.cpu));
    GANTRY_ASSERT_OK(Pool2dForward(x.gpu, o, y.gpu, &idx.gpu));
    ExpectNear(y, 0.0, 0.0, "y" + tag);
    ExpectNear(idx, 0.0, 0.0, "indices" + tag);
    Pair dy = RandomPair(ys, 12), dx = ZeroPair(xs);
    GANTRY_ASSERT_OK(Pool2dBackward(dy.cpu, &idx.cpu, o, dx.cpu));
    GANTRY_ASSERT_OK(Pool2dBackward(dy.gpu, &idx.gpu, o, dx.gpu));
    ExpectNear(dx, kRtol, 1e-6, "dx" + tag);
  }
}

}  // namespace
}  // namespace gantry::kernels::gpu_test
