// Public losses: shared checks (targets i32 one per row, loss f32 [1]), then dispatch.
#include "kernels/loss.h"

#include "kernels/dispatch.h"

namespace gantry::kernels {

namespace {

using internal::CheckDTypes;
using internal::CheckHasLastDim;
using internal::CheckNumel;

// scores [.., V] f32 with one i32 target per row.
Status CheckClassTargets(const char* op, const char* scores_name, const Tensor& scores,
                         const Tensor& targets) {
  GANTRY_RETURN_IF_ERROR(CheckHasLastDim(op, scores_name, scores));
  GANTRY_RETURN_IF_ERROR(CheckDType(op, "targets", targets, DType::kI32));
  return CheckNumel(op, "targets", targets, scores.numel() / scores.dim(-1));
}

// A mean over rows needs one (CPU and CUDA would disagree on 0/0: NaN vs 0).
Status CheckHasRows(const char* op, const char* name, const Tensor& scores) {
  if (scores.numel() > 0) return OkStatus();
  return InvalidArgumentError(std::string(op) + ": '" + name + "' " +
                              ShapeToString(scores.shape()) + " has no rows to average");
}

}  // namespace

Status CrossEntropyForward(const Tensor& logits, const Tensor& targets, Tensor& probs,
                           Tensor& loss) {
  constexpr const char* kOp = "CrossEntropyForward";
  GANTRY_RETURN_IF_ERROR(
      CheckDTypes(kOp, DType::kF32, {{"logits", &logits}, {"probs", &probs}, {"loss", &loss}}));
  GANTRY_RETURN_IF_ERROR(CheckSameDevice(kOp, {&logits, &targets, &probs, &loss}));
  GANTRY_RETURN_IF_ERROR(CheckClassTargets(kOp, "logits", logits, targets));
  GANTRY_RETURN_IF_ERROR(CheckShape(kOp, "probs", probs, logits.shape()));
  GANTRY_RETURN_IF_ERROR(CheckNumel(kOp, "loss", loss, 1));
  GANTRY_RETURN_IF_ERROR(CheckHasRows(kOp, "logits", logits));
  GANTRY_KERNELS_DISPATCH(kOp, logits.device(), CrossEntropyForward(logits, targets, probs, loss));
}

Status CrossEntropyBackward(const Tensor& probs, const Tensor& targets, float scale,
                            Tensor& dlogits) {
  constexpr const char* kOp = "CrossEntropyBackward";
  GANTRY_RETURN_IF_ERROR(CheckDTypes(kOp, DType::kF32, {{"probs", &probs}, {"dlogits", &dlogits}}));
  GANTRY_RETURN_IF_ERROR(CheckSameDevice(kOp, {&probs, &targets, &dlogits}));
  GANTRY_RETURN_IF_ERROR(CheckClassTargets(kOp, "probs", probs, targets));
  GANTRY_RETURN_IF_ERROR(CheckShape(kOp, "dlogits", dlogits, probs.shape()));
  GANTRY_KERNELS_DISPATCH(kOp, probs.device(),
                          CrossEntropyBackward(probs, targets, scale, dlogits));
}

Status MseForward(const Tensor& pred, const Tensor& target, Tensor& loss) {
  constexpr const char* kOp = "MseForward";
  GANTRY_RETURN_IF_ERROR(
      CheckDTypes(kOp, DType::kF32, {{"pred", &pred}, {"target", &target}, {"loss", &loss}}));
  GANTRY_RETURN_IF_ERROR(CheckSameDevice(kOp, {&pred, &target, &loss}));
  GANTRY_RETURN_IF_ERROR(CheckShape(kOp, "target", target, pred.shape()));
  GANTRY_RETURN_IF_ERROR(CheckNumel(kOp, "loss", loss, 1));
  if (pred.numel() == 0) return InvalidArgumentError("MseForward: 'pred' has no elements");
  GANTRY_KERNELS_DISPATCH(kOp, pred.device(), MseForward(pred, target, loss));
}

Status MseBackward(const Tensor& pred, const Tensor& target, float scale, Tensor& dpred) {
  constexpr const char* kOp = "MseBackward";
  GANTRY_RETURN_IF_ERROR(
      CheckDTypes(kOp, DType::kF32, {{"pred", &pred}, {"target", &target}, {"dpred", &dpred}}));
  GANTRY_RETURN_IF_ERROR(CheckSameDevice(kOp, {&pred, &target, &dpred}));
  GANTRY_RETURN_IF_ERROR(CheckShape(kOp, "target", target, pred.shape()));
  GANTRY_RETURN_IF_ERROR(CheckShape(kOp, "dpred", dpred, pred.shape()));
  GANTRY_KERNELS_DISPATCH(kOp, pred.device(), MseBackward(pred, target, scale, dpred));
}

Status HingeForward(const Tensor& scores, const Tensor& targets, Tensor& loss) {
  constexpr const char* kOp = "HingeForward";
  GANTRY_RETURN_IF_ERROR(CheckDTypes(kOp, DType::kF32, {{"scores", &scores}, {"loss", &loss}}));
  GANTRY_RETURN_IF_ERROR(CheckSameDevice(kOp, {&scores, &targets, &loss}));
  GANTRY_RETURN_IF_ERROR(CheckClassTargets(kOp, "scores", scores, targets));
  GANTRY_RETURN_IF_ERROR(CheckNumel(kOp, "loss", loss, 1));
  GANTRY_RETURN_IF_ERROR(CheckHasRows(kOp, "scores", scores));
  GANTRY_KERNELS_DISPATCH(kOp, scores.device(), HingeForward(scores, targets, loss));
}

Status HingeBackward(const Tensor& scores, const Tensor& targets, float scale, Tensor& dscores) {
  constexpr const char* kOp = "HingeBackward";
  GANTRY_RETURN_IF_ERROR(
      CheckDTypes(kOp, DType::kF32, {{"scores", &scores}, {"dscores", &dscores}}));
  GANTRY_RETURN_IF_ERROR(CheckSameDevice(kOp, {&scores, &targets, &dscores}));
  GANTRY_RETURN_IF_ERROR(CheckClassTargets(kOp, "scores", scores, targets));
  GANTRY_RETURN_IF_ERROR(CheckShape(kOp, "dscores", dscores, scores.shape()));
  GANTRY_KERNELS_DISPATCH(kOp, scores.device(), HingeBackward(scores, targets, scale, dscores));
}

}  // namespace gantry::kernels
