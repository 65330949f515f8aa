// Losses on CUDA: cross-entropy fused with softmax, MSE, multi-class hinge. Forward writes the
// mean into a device [1] tensor (row losses go to the context scratch, then a deterministic
// reduction); nothing synchronises. Bad targets: NaN + deferred kInvalidArgument.
#include <cuda_runtime.h>

#include <string>

#include "kernels/cuda/check.h"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/context.h"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/reduce.cuh"

namespace gantry::kernels::cuda {
namespace {

constexpr int kWarpsPerBlock = 8;
unsigned RowGrid(int64_t rows) {
  return static_cast<unsigned>((rows + kWarpsPerBlock - 1) / kWarpsPerBlock);
}

__global__ void CrossEntropyForwardKernel(const float* logits, const int32_t* targets,
                                          float* probs, float* row_loss, int64_t rows,
                                          int64_t cols, IndexError* err) {
  const int64_t r = int64_t(blockIdx.x) * kWarpsPerBlock + threadIdx.x / 32;
  if (r >= rows) return;
  const int lane = threadIdx.x % 32;
  const float* x = logits + r * cols;
  float m = -INFINITY;
  for (int64_t c = lane; c < cols; c += 32) m = fmaxf(m, x[c]);
  m = WarpMax(m);
  float s = 0.0f;
  for (int64_t c = lane; c < cols; c += 32) s += expf(x[c] - m);
  s = WarpSum(s);
  const float inv = 1.0f / s;
  const int32_t t = targets[r];
  const bool bad = t < 0 || t >= cols;
  float* p = probs + r * cols;
  // Read x[t] before the writes below: probs may alias logits.
  const float xt = bad ? 0.0f : x[t];
  __syncwarp();
  for (int64_t c = lane; c < cols; c += 32) p[c] = expf(x[c] - m) * inv;
  if (lane == 0) {
    if (bad) {
      row_loss[r] = NAN;
      ReportBadIndex(err, IndexOp::kCrossEntropyForward, r, t, cols);
    } else {
      row_loss[r] = logf(s) + m - xt;
    }
  }
}

__global__ void HingeForwardKernel(const float* scores, const int32_t* targets, float* row_loss,
                                   int64_t rows, int64_t cols, IndexError* err) {
  const int64_t r = int64_t(blockIdx.x) * kWarpsPerBlock + threadIdx.x / 32;
  if (r >= rows) return;
  const int lane = threadIdx.x % 32;
  const int32_t t = targets[r];
  if (t < 0 || t >= cols) {
    if (lane == 0) {
      row_loss[r] = NAN;
      ReportBadIndex(err, IndexOp::kHingeForward, r, t, cols);
    }
    return;
  }
  const float* x = scores + r * cols;
  const float xt = x[t];
  float s = 0.0f;
  for (int64_t c = lane; c < cols; c += 32) {
    if (c != t) s += fmaxf(0.0f, 1.0f - xt + x[c]);
  }
  s = WarpSum(s);
  if (lane == 0) row_loss[r] = s / cols;
}

__global__ void HingeBackwardKernel(const float* scores, const int32_t* targets, float g,
                                    float* ds, int64_t rows, int64_t cols, IndexError* err) {
  const int64_t r = int64_t(blockIdx.x) * kWarpsPerBlock + threadIdx.x / 32;
  if (r >= rows) return;
  const int lane = threadIdx.x % 32;
  const int32_t t = targets[r];
  float* d = ds + r * cols;
  if (t < 0 || t >= cols) {
    for (int64_t c = lane; c < cols; c += 32) d[c] = NAN;
    if (lane == 0) ReportBadIndex(err, IndexOp::kHingeBackward, r, t, cols);
    return;
  }
  const float* x = scores + r * cols;
  const float xt = x[t];
  __syncwarp();
  float active = 0.0f;
  for (int64_t c = lane; c < cols; c += 32) {
    if (c == t) continue;
    const bool on = 1.0f - xt + x[c] > 0.0f;
    d[c] = on ? g : 0.0f;
    active += on ? 1.0f : 0.0f;
  }
  active = WarpSum(active);
  if (lane == 0) d[t] = -active * g;
}

struct RowDims {
  int64_t rows, cols;
};
StatusOr<RowDims> ClassDims(const char* op, const OpEnv& env, const Tensor& x,
                            const Tensor& targets, std::initializer_list<const Tensor*> same) {
  GANTRY_RETURN_IF_ERROR(CheckOperand(op, "scores", x, env));
  GANTRY_RETURN_IF_ERROR(CheckOperand(op, "targets", targets, env, DType::kI32));
  const RowDims d{RowsOf(x), x.rank() ? x.dim(-1) : 1};
  if (targets.numel() != d.rows) {
    return InvalidArgumentError(std::string(op) + ": targets " + targets.ToString() +
                                " must hold one class per row of " + x.ToString());
  }
  for (const Tensor* t : same) {
    GANTRY_RETURN_IF_ERROR(CheckOperand(op, "output", *t, env));
    if (t->numel() != x.numel()) {
      return InvalidArgumentError(std::string(op) + ": " + t->ToString() + " must match " +
                                  x.ToString());
    }
  }
  return d;
}

Status CheckLoss(const char* op, const OpEnv& env, const Tensor& loss) {
  GANTRY_RETURN_IF_ERROR(CheckOperand(op, "loss", loss, env));
  if (loss.numel() != 1) {
    return InvalidArgumentError(std::string(op) + ": loss " + loss.ToString() + " must be [1]");
  }
  return OkStatus();
}

// loss[0] = mean of the first `rows` floats of the scratch.
Status MeanOfRows(const OpEnv& env, const float* row_loss, int64_t rows, Tensor& loss) {
  return SumReduce<double>(env, rows, rows > 0 ? 1.0 / static_cast<double>(rows) : 0.0,
                           loss.f32(),
                           [=] __device__(int64_t i) { return static_cast<double>(row_loss[i]); });
}

}  // namespace

Status CrossEntropyForward(const Tensor& logits, const Tensor& targets, Tensor& probs,
                           Tensor& loss) {
  constexpr const char* kOp = "CrossEntropyForward";
  GANTRY_ASSIGN_OR_RETURN(OpEnv env, BeginOp(kOp, logits));
  GANTRY_ASSIGN_OR_RETURN(RowDims d, ClassDims(kOp, env, logits, targets, {&probs}));
  GANTRY_RETURN_IF_ERROR(CheckLoss(kOp, env, loss));
  // Row losses live at the end of the scratch; the reduction's partials use its start.
  const size_t partial_bytes = kReduceMaxBlocks * sizeof(double);
  GANTRY_ASSIGN_OR_RETURN(void* scratch, Scratch(env.ctx, partial_bytes + d.rows * sizeof(float)));
  float* row_loss = reinterpret_cast<float*>(static_cast<char*>(scratch) + partial_bytes);
  if (d.rows > 0) {
    CrossEntropyForwardKernel<<<RowGrid(d.rows), kWarpsPerBlock * 32, 0, env.stream>>>(
        logits.f32(), targets.i32(), probs.f32(), row_loss, d.rows, d.cols, env.index_error);
    GANTRY_CUDA_CHECK_LAUNCH(kOp);
  }
  return MeanOfRows(env, row_loss, d.rows, loss);
}

Status CrossEntropyBackward(const Tensor& probs, const Tensor& targets, float scale,
                            Tensor& dlogits) {
  constexpr const char* kOp = "CrossEntropyBackward";
  GANTRY_ASSIGN_OR_RETURN(OpEnv env, BeginOp(kOp, probs));
  GANTRY_ASSIGN_OR_RETURN(RowDims d, ClassDims(kOp, env, probs, targets, {&dlogits}));
  const float* p = probs.f32();
  const int32_t* tg = targets.i32();
  float* dl = dlogits.f32();
  IndexError* err = env.index_error;
  const int64_t cols = d.cols;
  const float g = d.rows > 0 ? scale / static_cast<float>(d.rows) : 0.0f;
  return LaunchElementwise(probs.numel(), env.stream, [=] __device__(int64_t i) {
    const int64_t r = i / cols, c = i % cols;
    const int32_t t = tg[r];
    if (t < 0 || t >= cols) {
      dl[i] = NAN;
      if (c == 0) ReportBadIndex(err, IndexOp::kCrossEntropyBackward, r, t, cols);
      return;
    }
    dl[i] = (p[i] - (c == t ? 1.0f : 0.0f)) * g;
  });
}

Status MseForward(const Tensor& pred, const Tensor& target, Tensor& loss) {
  constexpr const char* kOp = "MseForward";
  GANTRY_ASSIGN_OR_RETURN(OpEnv env, BeginOp(kOp, pred));
  GANTRY_RETURN_IF_ERROR(CheckOperand(kOp, "pred", pred, env));
  GANTRY_RETURN_IF_ERROR(CheckOperand(kOp, "target", target, env));
  GANTRY_RETURN_IF_ERROR(CheckLoss(kOp, env, loss));
  if (pred.numel() != target.numel()) {
    return InvalidArgumentError(std::string(kOp) + ": pred " + pred.ToString() +
                                " and target " + target.ToString() + " differ in size");
  }
  const float* p = pred.f32();
  const float* t = target.f32();
  const int64_t n = pred.numel();
  return SumReduce<double>(env, n, n > 0 ? 1.0 / static_cast<double>(n) : 0.0, loss.f32(),
                           [=] __device__(int64_t i) {
                             const float d = p[i] - t[i];
                             return static_cast<double>(d * d);
                           });
}

Status MseBackward(const Tensor& pred, const Tensor& target, float scale, Tensor& dpred) {
  constexpr const char* kOp = "MseBackward";
  GANTRY_ASSIGN_OR_RETURN(OpEnv env, BeginOp(kOp, pred));
  GANTRY_RETURN_IF_ERROR(CheckOperand(kOp, "pred", pred, env));
  GANTRY_RETURN_IF_ERROR(CheckOperand(kOp, "target", target, env));
  GANTRY_RETURN_IF_ERROR(CheckOperand(kOp, "dpred", dpred, env));
  if (pred.numel() != target.numel() || pred.numel() != dpred.numel()) {
    return InvalidArgumentError(std::string(kOp) + ": pred " + pred.ToString() + ", target " +
                                target.ToString() + " and dpred " + dpred.ToString() +
                                " differ in size");
  }
  const float* p = pred.f32();
  const float* t = target.f32();
  float* dp = dpred.f32();
  const float g = pred.numel() > 0 ? 2.0f * scale / static_cast<float>(pred.numel()) : 0.0f;
  return LaunchElementwise(pred.numel(), env.stream,
                           [=] __device__(int64_t i) { dp[i] = (p[i] - t[i]) * g; });
}

Status HingeForward(const Tensor& scores, const Tensor& targets, Tensor& loss) {
  constexpr const char* kOp = "HingeForward";
  GANTRY_ASSIGN_OR_RETURN(OpEnv env, BeginOp(kOp, scores));
  GANTRY_ASSIGN_OR_RETURN(RowDims d, ClassDims(kOp, env, scores, targets, {}));
  GANTRY_RETURN_IF_ERROR(CheckLoss(kOp, env, loss));
  const size_t partial_bytes = kReduceMaxBlocks * sizeof(double);
  GANTRY_ASSIGN_OR_RETURN(void* scratch, Scratch(env.ctx, partial_bytes + d.rows * sizeof(float)));
  float* row_loss = reinterpret_cast<float*>(static_cast<char*>(scratch) + partial_bytes);
  if (d.rows > 0) {
    HingeForwardKernel<<<RowGrid(d.rows), kWarpsPerBlock * 32, 0, env.stream>>>(
        scores.f32(), targets.i32(), row_loss, d.rows, d.cols, env.index_error);
    GANTRY_CUDA_CHECK_LAUNCH(kOp);
  }
  return MeanOfRows(env, row_loss, d.rows, loss);
}

Status HingeBackward(const Tensor& scores, const Tensor& targets, float scale, Tensor& dscores) {
  constexpr const char* kOp = "HingeBackward";
  GANTRY_ASSIGN_OR_RETURN(OpEnv env, BeginOp(kOp, scores));
  GANTRY_ASSIGN_OR_RETURN(RowDims d, ClassDims(kOp, env, scores, targets, {&dscores}));
  if (d.rows == 0) return OkStatus();
  const float g = scale / static_cast<float>(d.rows) / static_cast<float>(d.cols);
  HingeBackwardKernel<<<RowGrid(d.rows), kWarpsPerBlock * 32, 0, env.stream>>>(
      scores.f32(), targets.i32(), g, dscores.f32(), d.rows, d.cols, env.index_error);
  GANTRY_CUDA_CHECK_LAUNCH(kOp);
  return OkStatus();
}

}  // namespace gantry::kernels::cuda
