// Public causal self-attention: shared checks on the GPT-2 qkv layout, then dispatch.
#include "kernels/attention.h"

#include "kernels/dispatch.h"

namespace gantry::kernels {

namespace {

// qkv [B, T, 3C] with C divisible by heads; returns C.
StatusOr<int64_t> CheckQkv(const char* op, const Tensor& qkv, int heads) {
  GANTRY_RETURN_IF_ERROR(internal::CheckRank(op, "qkv", qkv, 3));
  if (qkv.dim(2) % 3 != 0 || qkv.dim(2) == 0) {
    return InvalidArgumentError(std::string(op) + ": tensor 'qkv' has shape " +
                                ShapeToString(qkv.shape()) +
                                "; its last dim must be 3 * C (q | k | v)");
  }
  const int64_t c = qkv.dim(2) / 3;
  if (heads <= 0 || c % heads != 0) {
    return InvalidArgumentError(std::string(op) + ": heads=" + std::to_string(heads) +
                                " must be > 0 and divide C=" + std::to_string(c));
  }
  return c;
}

}  // namespace

Status CausalSelfAttentionForward(const Tensor& qkv, int heads, Tensor& out, Tensor& att) {
  constexpr const char* kOp = "CausalSelfAttentionForward";
  GANTRY_RETURN_IF_ERROR(internal::CheckDTypes(kOp, DType::kF32,
                                               {{"qkv", &qkv}, {"out", &out}, {"att", &att}}));
  GANTRY_RETURN_IF_ERROR(CheckSameDevice(kOp, {&qkv, &out, &att}));
  GANTRY_ASSIGN_OR_RETURN(int64_t c, CheckQkv(kOp, qkv, heads));
  const int64_t b = qkv.dim(0), t = qkv.dim(1);
  GANTRY_RETURN_IF_ERROR(CheckShape(kOp, "out", out, {b, t, c}));
  GANTRY_RETURN_IF_ERROR(CheckShape(kOp, "att", att, {b, heads, t, t}));
  GANTRY_KERNELS_DISPATCH(kOp, qkv.device(), CausalSelfAttentionForward(qkv, heads, out, att));
}

Status CausalSelfAttentionBackward(const Tensor& qkv, const Tensor& att, const Tensor& dout,
                                   int heads, Tensor& dqkv, Tensor& datt) {
  constexpr const char* kOp = "CausalSelfAttentionBackward";
  // The CPU backward needs no [B, heads, T, T] scratch: there datt may be left undefined.
  const bool check_datt = datt.defined() || !qkv.device().is_cpu();
  GANTRY_RETURN_IF_ERROR(internal::CheckDTypes(
      kOp, DType::kF32, {{"qkv", &qkv}, {"att", &att}, {"dout", &dout}, {"dqkv", &dqkv}}));
  GANTRY_RETURN_IF_ERROR(CheckSameDevice(kOp, {&qkv, &att, &dout, &dqkv}));
  if (check_datt) {
    GANTRY_RETURN_IF_ERROR(internal::CheckDTypes(kOp, DType::kF32, {{"datt", &datt}}));
    GANTRY_RETURN_IF_ERROR(CheckSameDevice(kOp, {&qkv, &datt}));
  }
  GANTRY_ASSIGN_OR_RETURN(int64_t c, CheckQkv(kOp, qkv, heads));
  const int64_t b = qkv.dim(0), t = qkv.dim(1);
  GANTRY_RETURN_IF_ERROR(CheckShape(kOp, "att", att, {b, heads, t, t}));
  GANTRY_RETURN_IF_ERROR(CheckShape(kOp, "dout", dout, {b, t, c}));
  GANTRY_RETURN_IF_ERROR(CheckShape(kOp, "dqkv", dqkv, qkv.shape()));
  if (check_datt) GANTRY_RETURN_IF_ERROR(CheckShape(kOp, "datt", datt, {b, heads, t, t}));
  GANTRY_KERNELS_DISPATCH(kOp, qkv.device(),
                          CausalSelfAttentionBackward(qkv, att, dout, heads, dqkv, datt));
}

}  // namespace gantry::kernels
