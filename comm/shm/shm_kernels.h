// Copy and reduce loops of the shm collectives, tuned for the bytes they move: the f32
// sum/avg reduction reads this rank's input once and stores the result twice (to its output
// and to the shared result slot that the other ranks copy from) in one AVX-512 pass, and big
// outputs are written with non-temporal stores (no read-for-ownership of a line that is about
// to be overwritten). Header-only; other dtypes and CPUs without AVX-512 use comm/reduce.h.
#pragma once

#include <unistd.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "comm/reduce.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace gantry::comm::shm_kernels {

// Staged allreduces whose output is at least this big write it with streaming stores: it
// exceeds the caches, so writing around them saves memory traffic and keeps the stage slots
// cached. `option` > 0 is taken as given (CommOptions::shm_streaming_min_bytes); 0 = auto:
// max(4 MiB, the last-level cache). Measured: on a Zen 5 host (32 MiB L3 per CCD) 64 MiB
// took 19.0 -> 10.9 ms with streaming from 4 MiB; on a Xeon VM reporting a 480 MiB L3,
// streaming was a loss at every size (2 ranks: 4-16 MiB 5.4 -> 7.8 GB/s, 64 MiB 5.3 -> 6.2,
// 256 MiB 5.1 -> 5.7 without it).
inline size_t StreamingMinBytes(size_t option) {
  if (option > 0) return option;
  static const size_t kAuto = [] {
    const long l3 = sysconf(_SC_LEVEL3_CACHE_SIZE);
    return std::max<size_t>(size_t(4) << 20, l3 > 0 ? size_t(l3) : 0);
  }();
  return kAuto;
}

#if defined(__x86_64__)
inline bool HaveAvx512() {
  static const bool kHave = __builtin_cpu_supports("avx512f");
  return kHave;
}

// dst[0..bytes) = src[...] with streaming stores for the 64-byte-aligned body of dst.
__attribute__((target("avx512f"))) inline void StreamCopy512(char* dst, const char* src,
                                                            size_t bytes) {
  size_t head = (64 - (reinterpret_cast<uintptr_t>(dst) & 63)) & 63;
  if (head > bytes) head = bytes;
  std::memcpy(dst, src, head);
  size_t i = head;
  for (; i + 256 <= bytes; i += 256) {
    __m512i a = _mm512_loadu_si512(src + i), b = _mm512_loadu_si512(src + i + 64);
    __m512i c = _mm512_loadu_si512(src + i + 128), d = _mm512_loadu_si512(src + i + 192);
    _mm512_stream_si512(reinterpret_cast<__m512i*>(dst + i), a);
    _mm512_stream_si512(reinterpret_cast<__m512i*>(dst + i + 64), b);
    _mm512_stream_si512(reinterpret_cast<__m512i*>(dst + i + 128), c);
    _mm512_stream_si512(reinterpret_cast<__m512i*>(dst + i + 192), d);
  }
  for (; i + 64 <= bytes; i += 64) {
    _mm512_stream_si512(reinterpret_cast<__m512i*>(dst + i), _mm512_loadu_si512(src + i));
  }
  std::memcpy(dst + i, src + i, bytes - i);
}

// Reading another core's freshly written lines: one sequential stream pulls ~20 GB/s here,
// four interleaved streams (one 256-byte block of each per round) ~27 GB/s: the prefetchers
// keep more cross-core transfers in flight (comm/shm/tools/shm_xcore --streams). The 2-rank sum
// and the copies of peers' results walk big spans that way; each element is still computed
// exactly as before, so the bits do not change.
constexpr size_t kPullStreams = 4;
constexpr size_t kPullBlock = 64;  // floats (256 bytes, 4 vectors)

// dst[0..bytes) = src[...] in kPullStreams interleaved streams (regular stores: the caller
// reads dst next). Small copies are plain memcpy.
__attribute__((target("avx512f"))) inline void PullCopy512(char* dst, const char* src,
                                                           size_t bytes) {
  constexpr size_t kBlockBytes = kPullBlock * sizeof(float);
  const size_t part = bytes / kPullStreams / kBlockBytes * kBlockBytes;
  if (part < 4 * kBlockBytes) {
    std::memcpy(dst, src, bytes);
    return;
  }
  for (size_t off = 0; off < part; off += kBlockBytes) {
    for (size_t s = 0; s < kPullStreams; ++s) {
      const size_t k = s * part + off;
      __m512i v0 = _mm512_loadu_si512(src + k), v1 = _mm512_loadu_si512(src + k + 64);
      __m512i v2 = _mm512_loadu_si512(src + k + 128), v3 = _mm512_loadu_si512(src + k + 192);
      _mm512_storeu_si512(dst + k, v0);
      _mm512_storeu_si512(dst + k + 64, v1);
      _mm512_storeu_si512(dst + k + 128, v2);
      _mm512_storeu_si512(dst + k + 192, v3);
    }
  }
  const size_t done = kPullStreams * part;
  std::memcpy(dst + done, src + done, bytes - done);
}

// One vector of the dual-store sum below: lanes `m` of elements [k, k + 16).
__attribute__((target("avx512f"))) inline __m512 SumVec512(float* shared, const float* mine,
                                                           const float* const* peers, int np,
                                                           size_t k, __mmask16 m,
                                                           bool scale_it, float scale) {
  __m512 acc = _mm512_maskz_loadu_ps(m, mine + k);
  for (int p = 0; p < np; ++p) acc = _mm512_add_ps(acc, _mm512_maskz_loadu_ps(m, peers[p] + k));
  if (scale_it) acc = _mm512_mul_ps(acc, _mm512_set1_ps(scale));
  if (shared != nullptr) _mm512_mask_storeu_ps(shared + k, m, acc);
  return acc;
}

// out[i] = shared[i] = scale * (mine[i] + peers[0][i] + ... + peers[np-1][i]) (left to right,
// as ReduceInto chains them). `stream` writes `out` with streaming stores where aligned.
// shared == nullptr: out only (out may equal mine: the in-place sum on symmetric memory).
__attribute__((target("avx512f"))) inline void SumF32Dual512(float* out, float* shared,
                                                            const float* mine,
                                                            const float* const* peers, int np,
                                                            size_t n, bool scale_it, float scale,
                                                            bool stream) {
  size_t i = 0;
  auto one = [&](size_t k, __mmask16 m) __attribute__((target("avx512f"))) {
    return SumVec512(shared, mine, peers, np, k, m, scale_it, scale);
  };
  // Head: until out is 64-byte aligned (masked, regular stores).
  size_t head = ((64 - (reinterpret_cast<uintptr_t>(out) & 63)) & 63) / sizeof(float);
  if (reinterpret_cast<uintptr_t>(out) % sizeof(float) != 0 || head > n) head = n;
  if (head > 0) {
    const __mmask16 m = static_cast<__mmask16>((1u << head) - 1);
    _mm512_mask_storeu_ps(out, m, one(0, m));
    i = head;
  }
  if (np == 1 && !scale_it) {  // the 2-rank sum: 4 vectors per iteration
    const float* peer = peers[0];
    // Elements [k, k + 64) (out + k 64-byte aligned).
    auto four = [&](size_t k) __attribute__((target("avx512f"))) {
      __m512 v[4];
      for (int u = 0; u < 4; ++u) {
        v[u] = _mm512_add_ps(_mm512_loadu_ps(mine + k + 16 * u), _mm512_loadu_ps(peer + k + 16 * u));
      }
      if (shared != nullptr) {
        for (int u = 0; u < 4; ++u) _mm512_storeu_ps(shared + k + 16 * u, v[u]);
      }
      for (int u = 0; u < 4; ++u) {
        if (stream) _mm512_stream_ps(out + k + 16 * u, v[u]);
        else _mm512_store_ps(out + k + 16 * u, v[u]);
      }
    };
    // Big spans: kPullStreams interleaved streams of one block each per round (see above).
    const size_t part = (n - i) / kPullStreams / kPullBlock * kPullBlock;
    if (part >= 4 * kPullBlock) {
      for (size_t off = 0; off < part; off += kPullBlock) {
        for (size_t s = 0; s < kPullStreams; ++s) four(i + s * part + off);
      }
      i += kPullStreams * part;
    }
    for (; i + 64 <= n; i += 64) four(i);
  }
  for (; i + 16 <= n; i += 16) {
    __m512 v = one(i, 0xFFFF);
    if (stream) _mm512_stream_ps(out + i, v);
    else _mm512_store_ps(out + i, v);
  }
  if (i < n) {
    const __mmask16 m = static_cast<__mmask16>((1u << (n - i)) - 1);
    _mm512_mask_storeu_ps(out + i, m, one(i, m));
  }
}
#endif

// SumF32Dual512 where available, else the same arithmetic in plain C++.
inline void SumF32Dual(float* out, float* shared, const float* mine, const float* const* peers,
                       int np, size_t n, bool scale_it, float scale, bool stream) {
#if defined(__x86_64__)
  if (HaveAvx512()) return SumF32Dual512(out, shared, mine, peers, np, n, scale_it, scale, stream);
#endif
  for (size_t i = 0; i < n; ++i) {
    float acc = mine[i];
    for (int p = 0; p < np; ++p) acc += peers[p][i];
    if (scale_it) acc *= scale;
    if (shared != nullptr) shared[i] = acc;
    out[i] = acc;
  }
}

// dst = src (bytes) read from another rank's memory: PullCopy512 where available.
inline void PullCopy(void* dst, const void* src, size_t bytes) {
#if defined(__x86_64__)
  if (HaveAvx512()) {
    return PullCopy512(static_cast<char*>(dst), static_cast<const char*>(src), bytes);
  }
#endif
  std::memcpy(dst, src, bytes);
}

// dst = src (bytes); streaming stores when `stream` and the CPU has AVX-512.
inline void CopyOut(void* dst, const void* src, size_t bytes, bool stream) {
#if defined(__x86_64__)
  if (stream && HaveAvx512()) {
    return StreamCopy512(static_cast<char*>(dst), static_cast<const char*>(src), bytes);
  }
#endif
  std::memcpy(dst, src, bytes);
}

// True when SumF32Dual can run (f32 sum/avg on an AVX-512 CPU).
inline bool CanFuse(DataType dtype, ReduceOp op) {
#if defined(__x86_64__)
  return dtype == DataType::kF32 && (op == ReduceOp::kSum || op == ReduceOp::kAvg) &&
         HaveAvx512();
#else
  return (void)dtype, (void)op, false;
#endif
}

// Orders this thread's streaming stores before whatever it publishes next.
inline void StreamFence() {
#if defined(__x86_64__)
  _mm_sfence();
#endif
}

}  // namespace gantry::comm::shm_kernels
