// Losses: cross-entropy fused with softmax, MSE, multi-class hinge. Each forward writes the
// mean loss into `loss` (f32 [1], same device as the inputs) so a CUDA step never syncs;
// backward takes `scale`, the gradient of the objective with respect to the mean loss value
// (1 for plain training; 1/world when data-parallel gradients are summed). See kernels/linear.h for conventions.
#pragma once

#include "kernels/tensor.h"

namespace gantry::kernels {

// logits [N.., V], targets i32 [N..] with values in [0, V) -> probs [N.., V] (softmax, saved
// for backward), loss = mean over rows of -log probs[target]. A target outside [0, V) is
// kInvalidArgument naming its row.
Status CrossEntropyForward(const Tensor& logits, const Tensor& targets, Tensor& probs,
                           Tensor& loss);
// dlogits = (probs - onehot(target)) * scale / rows (overwrite; may alias probs).
Status CrossEntropyBackward(const Tensor& probs, const Tensor& targets, float scale,
                            Tensor& dlogits);

// loss = mean((pred - target)^2) over all elements.
Status MseForward(const Tensor& pred, const Tensor& target, Tensor& loss);
// dpred = 2 * (pred - target) * scale / numel.
Status MseBackward(const Tensor& pred, const Tensor& target, float scale, Tensor& dpred);

// Multi-class hinge as torch.nn.MultiMarginLoss (p=1, margin=1): per row
// sum_{j != y} max(0, 1 - x[y] + x[j]) / C; loss = mean over rows.
Status HingeForward(const Tensor& scores, const Tensor& targets, Tensor& loss);
// dscores = d(loss)/d(scores) * scale.
Status HingeBackward(const Tensor& scores, const Tensor& targets, float scale, Tensor& dscores);

}  // namespace gantry::kernels
