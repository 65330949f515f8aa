// CUDA backend of the kernels op table: the same functions as kernels/{linear,activation,norm,
// attention,embedding,conv,loss,optim}.h, in gantry::kernels::cuda, plus memory and runtime
// calls. The public dispatchers (kernels/*.cc) check shapes, dtypes and devices, then call
// these for cuda tensors; these functions only re-check what they index with.
// Ops queue work on kernels::CurrentStream() of the tensors' device and never synchronise,
// except L2Norm / ClipGradNorm (they return a host float) and Memcpy to or from host.
// Errors: kDeviceError with the CUDA/cuBLAS/cuDNN message and file:line; bad indices (tokens,
// targets) found on the device are reported by the next call on that device or by Synchronize.
#pragma once

#include <cstddef>
#include <cstdint>

#include "base/status.h"
#include "kernels/activation.h"
#include "kernels/attention.h"
#include "kernels/conv.h"
#include "kernels/embedding.h"
#include "kernels/linear.h"
#include "kernels/loss.h"
#include "kernels/norm.h"
#include "kernels/runtime.h"
#include "kernels/optim.h"
#include "kernels/tensor.h"

namespace gantry::kernels::cuda {

// ---- runtime and memory ------------------------------------------------------------------
// Usable devices; 0 when there is no driver or GPU (never aborts).
int DeviceCount();
StatusOr<CudaDeviceProperties> DeviceProperties(int device);
// Device memory; zero bytes gives nullptr. Free ignores nullptr and errors (it runs in dtors).
Status Malloc(void** ptr, size_t bytes, int device);
void Free(void* ptr, int device);
// Any direction. Host<->device copies return when the host side may be reused (the stream is
// synchronised); device<->device copies are queued on the current stream.
Status Memcpy(void* dst, Device dst_device, const void* src, Device src_device, size_t bytes);
Status MemsetZero(void* ptr, size_t bytes, int device);
// Waits for this thread's current stream on `device`, then reports deferred index errors.
Status Synchronize(int device);
// f32 <-> bf16 / f16 (and same-dtype copies) on the device; numel must match.
Status Cast(const Tensor& src, Tensor& dst);

// ---- kernels/linear.h ----------------------------------------------------------------------
Status Matmul(const Tensor& a, const Tensor& b, Tensor& c, const GemmOptions& opts = {});
Status MatmulBackward(const Tensor& a, const Tensor& b, const Tensor& dc, Tensor* da, Tensor* db);
Status LinearForward(const Tensor& x, const Tensor& w, const Tensor* b, Tensor& y);
Status LinearBackward(const Tensor& x, const Tensor& w, const Tensor& dy, Tensor* dx, Tensor& dw,
                      Tensor* db);
Status BiasAddForward(Tensor& y, const Tensor& b);
Status BiasAddBackward(const Tensor& dy, Tensor& db);
Status Add(const Tensor& a, const Tensor& b, Tensor& y);
Status AddInPlace(Tensor& y, const Tensor& x, float alpha = 1.0f);
Status Scale(Tensor& t, float s);

// ---- kernels/activation.h ------------------------------------------------------------------
Status ActivationForward(Activation act, const Tensor& x, Tensor& y);
Status ActivationBackward(Activation act, const Tensor& x, const Tensor& y, const Tensor& dy,
                          Tensor& dx);

// ---- kernels/norm.h ------------------------------------------------------------------------
Status SoftmaxForward(const Tensor& x, Tensor& y);
Status SoftmaxBackward(const Tensor& y, const Tensor& dy, Tensor& dx);
Status LayerNormForward(const Tensor& x, const Tensor& gamma, const Tensor& beta, float eps,
                        Tensor& y, Tensor& mean, Tensor& rstd);
Status LayerNormBackward(const Tensor& x, const Tensor& gamma, const Tensor& mean,
                         const Tensor& rstd, const Tensor& dy, Tensor& dx, Tensor& dgamma,
                         Tensor& dbeta);

// ---- kernels/attention.h -------------------------------------------------------------------
Status CausalSelfAttentionForward(const Tensor& qkv, int heads, Tensor& out, Tensor& att);
Status CausalSelfAttentionBackward(const Tensor& qkv, const Tensor& att, const Tensor& dout,
                                   int heads, Tensor& dqkv, Tensor& datt);

// ---- kernels/embedding.h -------------------------------------------------------------------
Status EmbeddingForward(const Tensor& tokens, const Tensor& wte, const Tensor* wpe, Tensor& out);
Status EmbeddingBackward(const Tensor& tokens, const Tensor& dout, Tensor& dwte, Tensor* dwpe);

// ---- kernels/conv.h ------------------------------------------------------------------------
// cuDNN workspace (f32 elements) for the algorithms Conv2dForward/Backward will pick on
// `device`; 0 when no GPU is usable. Choices are cached per shape, so the two always agree.
int64_t Conv2dWorkspaceElements(const Shape& x, const Shape& w, const Conv2dOptions& opts,
                                Device device);
Status Conv2dForward(const Tensor& x, const Tensor& w, const Tensor* b, const Conv2dOptions& opts,
                     Tensor& y, Tensor& workspace);
Status Conv2dBackward(const Tensor& x, const Tensor& w, const Tensor& dy,
                      const Conv2dOptions& opts, Tensor* dx, Tensor& dw, Tensor* db,
                      Tensor& workspace);
Status Pool2dForward(const Tensor& x, const Pool2dOptions& opts, Tensor& y, Tensor* indices);
Status Pool2dBackward(const Tensor& dy, const Tensor* indices, const Pool2dOptions& opts,
                      Tensor& dx);

// ---- kernels/loss.h ------------------------------------------------------------------------
Status CrossEntropyForward(const Tensor& logits, const Tensor& targets, Tensor& probs,
                           Tensor& loss);
Status CrossEntropyBackward(const Tensor& probs, const Tensor& targets, float scale,
                            Tensor& dlogits);
Status MseForward(const Tensor& pred, const Tensor& target, Tensor& loss);
Status MseBackward(const Tensor& pred, const Tensor& target, float scale, Tensor& dpred);
Status HingeForward(const Tensor& scores, const Tensor& targets, Tensor& loss);
Status HingeBackward(const Tensor& scores, const Tensor& targets, float scale, Tensor& dscores);

// ---- kernels/optim.h -----------------------------------------------------------------------
Status SgdUpdate(Tensor& param, const Tensor& grad, Tensor* momentum_buf, const SgdOptions& opts);
Status AdamUpdate(Tensor& param, const Tensor& grad, Tensor& m, Tensor& v,
                  const AdamOptions& opts);
StatusOr<float> L2Norm(const Tensor& t);
StatusOr<float> ClipGradNorm(Tensor& grad, float max_norm);

}  // namespace gantry::kernels::cuda
