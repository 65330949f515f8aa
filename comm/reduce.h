// Element-wise reduction kernels shared by the host backends (tcp, shm, mpi's user ops).
// Vectorised for the host CPU at run time (AVX-512 / AVX2 clones); bf16 and f16 are widened to
// f32 for the operation and rounded back to nearest-even. Thread-safe (pure functions).
#pragma once

#include <cstddef>
#include <cstdint>

#include "comm/types.h"

namespace gantry::comm {

// dst[i] = a[i] op b[i] for i < count. dst may alias a or b exactly (not partially).
// kAvg reduces like kSum; the backend scales once at the end with FinishAverage.
void ReduceInto(void* dst, const void* a, const void* b, size_t count, DataType dtype,
                ReduceOp op);

// data[i] /= world (floats: multiply by 1/world, rounded once; i32: truncating division).
void FinishAverage(void* data, size_t count, DataType dtype, int world);

// Scalar conversions (round to nearest even; NaN stays NaN).
float BF16ToFloat(uint16_t bits);
uint16_t FloatToBF16(float value);
float F16ToFloat(uint16_t bits);
uint16_t FloatToF16(float value);

}  // namespace gantry::comm
