// Element types, reduction operators and buffer locations understood by every comm backend.
// DataType values equal kernels::DType's, so a Tensor's dtype casts directly; comm itself
// depends only on base (DESIGN.md), not on kernels.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "base/status.h"

namespace gantry::comm {

enum class DataType : uint8_t { kF32 = 0, kBF16 = 1, kF16 = 2, kI32 = 3 };
enum class ReduceOp : uint8_t { kSum = 0, kAvg = 1, kMax = 2, kMin = 3 };
// Where a buffer lives. Host backends (tcp, shm, mpi) take kHost; nccl takes kCuda.
enum class MemoryKind : uint8_t { kHost = 0, kCuda = 1 };

size_t DataTypeSize(DataType dtype);
std::string_view DataTypeName(DataType dtype);  // "f32", "bf16", "f16", "i32"
std::string_view ReduceOpName(ReduceOp op);     // "sum", "avg", "max", "min"
StatusOr<DataType> ParseDataType(std::string_view name);
StatusOr<ReduceOp> ParseReduceOp(std::string_view name);

// Maps a C++ element type to its DataType (for the typed span helpers).
template <typename T> struct DataTypeOf;
template <> struct DataTypeOf<float> { static constexpr DataType kValue = DataType::kF32; };
template <> struct DataTypeOf<int32_t> { static constexpr DataType kValue = DataType::kI32; };

// 16-bit float storage types (bit patterns). Conversions live in comm/reduce.h.
struct BFloat16 { uint16_t bits; };
struct Float16 { uint16_t bits; };
template <> struct DataTypeOf<BFloat16> { static constexpr DataType kValue = DataType::kBF16; };
template <> struct DataTypeOf<Float16> { static constexpr DataType kValue = DataType::kF16; };

// "allreduce #12 (f32 x 1048579, sum)": how errors name an operation.
struct OpLabel {
  std::string_view name;  // "allreduce", "broadcast", ...
  uint64_t seq = 0;       // per-communicator sequence number of collectives (p2p: per lane)
  size_t count = 0;
  DataType dtype = DataType::kF32;
  std::string detail;     // e.g. "sum" or "root 2" or "peer 3 tag 7"
  std::string ToString() const;
};

}  // namespace gantry::comm
