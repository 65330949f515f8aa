// Parallel loops of the CPU backend on the kernels' own persistent thread pool (implemented in
// kernels/runtime.cc next to the thread-count setting). Work is cut into chunks that threads
// claim dynamically, the calling thread included, so a helper that the OS has preempted delays
// nothing but the one chunk it holds; no spin barriers, helpers sleep on a futex when idle.
// Chunk boundaries depend only on the arguments, never on timing: reductions that keep one
// partial per chunk and merge them in chunk order are bitwise reproducible. Internal.
#pragma once

#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <vector>

namespace gantry::kernels::cpu {

using ChunkFn = void (*)(void* ctx, int64_t chunk);

// Runs fn(ctx, c) for every c in [0, chunks) on up to `threads` threads (the caller included)
// and returns when all have finished. Runs serially on the calling thread when threads <= 1,
// inside another parallel loop, or when another thread is using the pool. Thread-safe.
void RunChunks(int64_t chunks, int threads, ChunkFn fn, void* ctx);

// True on a pool helper thread, or on a caller thread while it runs its own chunks.
bool InParallelRegion();

// fn(int64_t chunk) for chunk in [0, chunks).
// The serial case also goes through RunChunks: the body is then the same outlined function
// for every thread count (an inlined copy may contract multiply-adds differently).
template <typename Fn>
void ParallelChunks(int64_t chunks, int threads, Fn&& fn) {
  using F = std::remove_reference_t<Fn>;
  RunChunks(
      chunks, threads, [](void* ctx, int64_t c) { (*static_cast<F*>(ctx))(c); },
      const_cast<void*>(static_cast<const void*>(&fn)));
}

// Chunks per thread for loops without a reduction: enough for one preempted thread to cost
// little, few enough that claiming (one atomic add each) stays negligible.
constexpr int64_t kChunksPerThread = 4;

// fn(begin, end) over [0, n) in about threads * kChunksPerThread equal ranges. Pass a lambda
// that captures by value ([=]) for loops that should vectorise.
template <typename Fn>
void ParallelFor(int64_t n, int threads, Fn&& fn) {
  if (n <= 0) return;
  const int64_t chunks = threads <= 1 ? 1 : std::min<int64_t>(n, threads * kChunksPerThread);
  const int64_t grain = (n + chunks - 1) / chunks;
  ParallelChunks((n + grain - 1) / grain, threads, [&](int64_t c) {
    // A local copy of a by-value ([=]) body: its captured pointers and scalars then live in
    // registers, where the loop's stores cannot alias them (through a reference they would
    // be reloaded every iteration, and the loop would not vectorise).
    std::remove_cvref_t<Fn> body = fn;
    const int64_t begin = c * grain;
    body(begin, std::min(n, begin + grain));
  });
}

// Sum over chunks of fn(chunk) -> double, merged in chunk order whatever thread ran each
// chunk, so the result is bitwise the same for every thread count and schedule.
template <typename Fn>
double ParallelSum(int64_t chunks, int threads, Fn&& fn) {
  thread_local std::vector<double> partials;  // on the calling thread; grows, never shrinks
  if (static_cast<int64_t>(partials.size()) < chunks) partials.resize(chunks);
  double* part = partials.data();
  ParallelChunks(chunks, threads, [&](int64_t c) { part[c] = fn(c); });
  double total = 0.0;
  for (int64_t c = 0; c < chunks; ++c) total += part[c];
  return total;
}

}  // namespace gantry::kernels::cpu
