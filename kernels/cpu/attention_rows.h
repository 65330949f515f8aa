// Row kernels of CPU causal attention (kernels/cpu/attention.cc): the causal softmax and its
// backward over rows of a [T, T] block, for rows of a few dozen elements. AVX-512 with
// masked tails where the CPU has it (GCC's `omp simd` reductions spill their lanes and run
// scalar tails, ~6 cycles per element at these lengths), a plain loop elsewhere. Internal.
#pragma once

#include <cstdint>

namespace gantry::kernels::cpu {

// Rows [i0, i1) of the [T, T] block s (row stride t): row i becomes softmax(s[i, 0..i]) on
// j <= i and zeros on i < j < t.
void CausalSoftmaxRows(float* s, int64_t t, int64_t i0, int64_t i1);

// Rows [i0, i1) of the softmax backward: for row i (p at p + i * t, dP at ds + (i - i0) * ld),
// dS[i, j] = P[i, j] * (dP[i, j] - sum_{j' <= i} dP[i, j'] P[i, j']) on j <= i, written over
// dP, and zeros on i < j < zero_to.
void CausalSoftmaxBackwardRows(const float* p, int64_t t, float* ds, int64_t ld, int64_t i0,
                               int64_t i1, int64_t zero_to);

// The plain loops the two above run without AVX-512 (callable anywhere; for tests).
void CausalSoftmaxRowsPortable(float* s, int64_t t, int64_t i0, int64_t i1);
void CausalSoftmaxBackwardRowsPortable(const float* p, int64_t t, float* ds, int64_t ld,
                                       int64_t i0, int64_t i1, int64_t zero_to);

}  // namespace gantry::kernels::cpu
