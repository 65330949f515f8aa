// Names and parsing for comm's element types and reduction operators.
#include "comm/types.h"

namespace gantry::comm {

size_t DataTypeSize(DataType dtype) {
  switch (dtype) {
    case DataType::kF32: return 4;
    case DataType::kBF16: return 2;
    case DataType::kF16: return 2;
    case DataType::kI32: return 4;
  }
  return 0;
}

std::string_view DataTypeName(DataType dtype) {
  switch (dtype) {
    case DataType::kF32: return "f32";
    case DataType::kBF16: return "bf16";
    case DataType::kF16: return "f16";
    case DataType::kI32: return "i32";
  }
  return "?";
}

std::string_view ReduceOpName(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum: return "sum";
    case ReduceOp::kAvg: return "avg";
    case ReduceOp::kMax: return "max";
    case ReduceOp::kMin: return "min";
  }
  return "?";
}

StatusOr<DataType> ParseDataType(std::string_view name) {
  for (DataType d : {DataType::kF32, DataType::kBF16, DataType::kF16, DataType::kI32}) {
    if (name == DataTypeName(d)) return d;
  }
  return InvalidArgumentError("unknown comm data type '" + std::string(name) +
                              "': use one of f32, bf16, f16, i32");
}

StatusOr<ReduceOp> ParseReduceOp(std::string_view name) {
  for (ReduceOp o : {ReduceOp::kSum, ReduceOp::kAvg, ReduceOp::kMax, ReduceOp::kMin}) {
    if (name == ReduceOpName(o)) return o;
  }
  return InvalidArgumentError("unknown reduce op '" + std::string(name) +
                              "': use one of sum, avg, max, min");
}

std::string OpLabel::ToString() const {
  std::string s(name);
  s += " #" + std::to_string(seq) + " (" + std::string(DataTypeName(dtype)) + " x " +
       std::to_string(count);
  if (!detail.empty()) s += ", " + detail;
  s += ")";
  return s;
}

}  // namespace gantry::comm
