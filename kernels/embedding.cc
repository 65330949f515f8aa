// Public token + position embedding: shared checks, then dispatch.
#include "kernels/embedding.h"

#include "kernels/dispatch.h"

namespace gantry::kernels {

namespace {

// tokens [B, T] i32 and a table [rows, C] (rank 2); returns nothing, checks wpe covers T.
Status CheckTables(const char* op, const Tensor& tokens, const char* table_name,
                   const Tensor& table, const char* pos_name, const Tensor* pos) {
  GANTRY_RETURN_IF_ERROR(CheckDType(op, "tokens", tokens, DType::kI32));
  GANTRY_RETURN_IF_ERROR(internal::CheckRank(op, "tokens", tokens, 2));
  GANTRY_RETURN_IF_ERROR(internal::CheckRank(op, table_name, table, 2));
  if (pos != nullptr) {
    GANTRY_RETURN_IF_ERROR(internal::CheckRank(op, pos_name, *pos, 2));
    if (pos->dim(0) < tokens.dim(1) || pos->dim(1) != table.dim(1)) {
      return InvalidArgumentError(std::string(op) + ": tensor '" + pos_name + "' has shape " +
                                  ShapeToString(pos->shape()) + " but [>= " +
                                  std::to_string(tokens.dim(1)) + ", " +
                                  std::to_string(table.dim(1)) +
                                  "] is required (T positions, C channels)");
    }
  }
  return OkStatus();
}

}  // namespace

Status EmbeddingForward(const Tensor& tokens, const Tensor& wte, const Tensor* wpe, Tensor& out) {
  constexpr const char* kOp = "EmbeddingForward";
  GANTRY_RETURN_IF_ERROR(
      internal::CheckDTypes(kOp, DType::kF32, {{"wte", &wte}, {"wpe", wpe}, {"out", &out}}));
  GANTRY_RETURN_IF_ERROR(CheckSameDevice(kOp, {&tokens, &wte, wpe, &out}));
  GANTRY_RETURN_IF_ERROR(CheckTables(kOp, tokens, "wte", wte, "wpe", wpe));
  GANTRY_RETURN_IF_ERROR(CheckShape(kOp, "out", out, {tokens.dim(0), tokens.dim(1), wte.dim(1)}));
  GANTRY_KERNELS_DISPATCH(kOp, tokens.device(), EmbeddingForward(tokens, wte, wpe, out));
}

Status EmbeddingBackward(const Tensor& tokens, const Tensor& dout, Tensor& dwte, Tensor* dwpe) {
  constexpr const char* kOp = "EmbeddingBackward";
  GANTRY_RETURN_IF_ERROR(internal::CheckDTypes(kOp, DType::kF32,
                                               {{"dout", &dout}, {"dwte", &dwte}, {"dwpe", dwpe}}));
  GANTRY_RETURN_IF_ERROR(CheckSameDevice(kOp, {&tokens, &dout, &dwte, dwpe}));
  GANTRY_RETURN_IF_ERROR(CheckTables(kOp, tokens, "dwte", dwte, "dwpe", dwpe));
  GANTRY_RETURN_IF_ERROR(
      CheckShape(kOp, "dout", dout, {tokens.dim(0), tokens.dim(1), dwte.dim(1)}));
  GANTRY_KERNELS_DISPATCH(kOp, tokens.device(), EmbeddingBackward(tokens, dout, dwte, dwpe));
}

}  // namespace gantry::kernels
