// Mixed-precision CPU GEMM (MatmulPrecision::kBf16): op(A) and op(B) are rounded to bf16
// (nearest even) into per-thread scratch, multiplied by oneDNN's matmul primitive -- AMX or
// AVX512-BF16 kernels where the CPU has them -- with f32 accumulation, and C is written in
// f32 (alpha as an output scale, beta as a sum post-op). The same contract as Sgemm; what
// torch.autocast(bfloat16) does for matmuls. Primitives are created once per shape and kept;
// parameter matrices are cast once per weights epoch (runtime.h SetMatmulWeights).
#include <omp.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>
#include <vector>

#include "gantry_config.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/parallel.h"
#include "kernels/runtime.h"
#if GANTRY_WITH_DNNL
#include <dnnl.hpp>
#endif

namespace gantry::kernels::cpu {

#if GANTRY_WITH_DNNL
namespace {

// rows x cols floats (leading dim ld) -> contiguous bf16, rounded to nearest even.
void ToBf16(const float* src, int64_t rows, int64_t cols, int64_t ld, uint16_t* dst) {
  if (ld == cols) return FloatsToBf16(src, rows * cols, dst);
  for (int64_t r = 0; r < rows; ++r) FloatsToBf16(src + r * ld, cols, dst + r * cols);
}

// ToBf16 over row blocks on the kernels' pool (a 2048 x 8192 logit gradient is 64 MiB; an
// mlp-mnist activation 128 x 784 is 100k elements). Blocks of 32k elements: with 256k, every
// mlp-mnist cast ran on one thread while the other waited (2 threads, bf16: 9.7% of samples
// in the serial casts).
void ToBf16Parallel(const float* src, int64_t rows, int64_t cols, int64_t ld, uint16_t* dst,
                    int threads) {
  constexpr int64_t kBlockElems = 1 << 15;
  const int64_t per_block = std::max<int64_t>(1, kBlockElems / std::max<int64_t>(1, cols));
  const int64_t blocks = (rows + per_block - 1) / per_block;
  if (threads <= 1 || blocks <= 1) return ToBf16(src, rows, cols, ld, dst);
  ParallelChunks(blocks, threads, [&](int64_t b) {
    const int64_t r0 = b * per_block, n = std::min(per_block, rows - r0);
    ToBf16(src + r0 * ld, n, cols, ld, dst + r0 * cols);
  });
}

// bf16 copies of parameter matrices, made once per weights epoch (runtime.h). A contiguous
// matrix's copy is its slice of the range's bf16 copy (taken as is when the optimizer wrote
// it for this epoch); a strided one's is kept here.
class WeightCache {
 public:
  // The bf16 copy of the rows x cols matrix at src (leading dim ld), inside the range `w`.
  // The cast runs on `threads` pool threads (1 inside a parallel region).
  const uint16_t* Get(const float* src, int64_t rows, int64_t cols, int64_t ld,
                      const MatmulWeightsInfo& w, int threads) {
    const bool in_copy = ld == cols && w.bf16_copy != nullptr;
    if (in_copy && w.bf16_copy_current) return w.bf16_copy;
    std::lock_guard<std::mutex> lock(mu_);
    Entry& e = entries_[std::make_tuple(src, rows, cols, ld)];
    if (e.epoch != w.epoch) {
      if (!in_copy) e.data.resize(size_t(rows * cols));
      ToBf16Parallel(src, rows, cols, ld, in_copy ? w.bf16_copy : e.data.data(), threads);
      e.epoch = w.epoch;
    }
    return in_copy ? w.bf16_copy : e.data.data();
  }

 private:
  struct Entry {
    uint64_t epoch = 0;
    std::vector<uint16_t> data;  // strided matrices only
  };
  std::mutex mu_;
  std::map<std::tuple<const float*, int64_t, int64_t, int64_t>, Entry> entries_;
};

WeightCache& Weights() {
  static WeightCache cache;
  return cache;
}

// op's operand as contiguous bf16: the cached copy of a parameter matrix, or a fresh cast into
// this thread's scratch.
const uint16_t* Operand(const float* src, int64_t rows, int64_t cols, int64_t ld,
                        std::vector<uint16_t>& scratch, int threads) {
  const size_t span = size_t((rows - 1) * ld + cols) * sizeof(float);
  if (const MatmulWeightsInfo w = MatmulWeightsOf(src, span); w.epoch != 0) {
    return Weights().Get(src, rows, cols, ld, w, threads);
  }
  if (scratch.size() < size_t(rows * cols)) scratch.resize(size_t(rows * cols));
  ToBf16Parallel(src, rows, cols, ld, scratch.data(), threads);
  return scratch.data();
}

// (ta, tb, m, n, k, lda, ldb, ldc, alpha, beta): lda/ldb of the bf16 operands.
using Key = std::tuple<bool, bool, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, float,
                       float>;

struct Prim {
  dnnl::memory::desc a, b, c, scratch;
  dnnl::matmul matmul;
};

dnnl::engine& Engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

// The matmul for this shape (created on first use; thread-safe).
const Prim& PrimitiveFor(const Key& key) {
  static std::mutex mu;
  static std::map<Key, std::unique_ptr<Prim>> cache;
  std::lock_guard<std::mutex> lock(mu);
  auto& slot = cache[key];
  if (!slot) {
    const auto [ta, tb, m, n, k, lda, ldb, ldc, alpha, beta] = key;
    using dt = dnnl::memory::data_type;
    auto p = std::make_unique<Prim>();
    // Operands as stored: A is [m,k] (or [k,m] when transposed), B [k,n] (or [n,k]), rows
    // lda / ldb apart; the strides present op(A) [m,k] and op(B) [k,n] to oneDNN.
    using dims = dnnl::memory::dims;
    p->a = dnnl::memory::desc({m, k}, dt::bf16, ta ? dims{1, lda} : dims{lda, 1});
    p->b = dnnl::memory::desc({k, n}, dt::bf16, tb ? dims{1, ldb} : dims{ldb, 1});
    p->c = dnnl::memory::desc({m, n}, dt::f32, dnnl::memory::dims{ldc, 1});
    dnnl::primitive_attr attr;
    // Pool threads run products concurrently (tiles, attention heads): each brings its own
    // scratchpad (the library's shared one is not safe for concurrent execution).
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    if (alpha != 1.0f) attr.set_output_scales(0, {alpha});
    if (beta != 0.0f) {
      dnnl::post_ops ops;
      ops.append_sum(beta);
      attr.set_post_ops(ops);
    }
    dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(p->a, p->b, p->c), attr, Engine());
    p->matmul = dnnl::matmul(pd);
    p->scratch = pd.scratchpad_desc();
    slot = std::move(p);
  }
  return *slot;
}

// One tile of C: rows [i0, i0 + mb) x columns [j0, j0 + nb), single-threaded in oneDNN.
Status Bf16Tile(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, const uint16_t* a,
                const uint16_t* b, float beta, float* c, int64_t ldc, int64_t i0, int64_t mb,
                int64_t j0, int64_t nb) {
  const int64_t lda = ta ? m : k, ldb = tb ? k : n;  // the bf16 copies are contiguous
  const uint16_t* at = a + (ta ? i0 : i0 * lda);
  const uint16_t* bt = b + (tb ? j0 * ldb : j0);
  try {
    const Prim& p = PrimitiveFor(Key{ta, tb, mb, nb, k, lda, ldb, ldc, alpha, beta});
    thread_local dnnl::stream stream(Engine());
    dnnl::memory ma(p.a, Engine(), const_cast<uint16_t*>(at));
    dnnl::memory mbm(p.b, Engine(), const_cast<uint16_t*>(bt));
    dnnl::memory mc(p.c, Engine(), c + i0 * ldc + j0);
    thread_local std::vector<char> scratch;  // this thread's scratchpad, grown as needed
    if (scratch.size() < p.scratch.get_size()) scratch.resize(p.scratch.get_size());
    dnnl::memory ms(p.scratch, Engine(), scratch.data());
    const int prev = omp_get_max_threads();
    if (prev != 1) omp_set_num_threads(1);  // parallel over tiles on our own pool instead
    p.matmul.execute(stream, {{DNNL_ARG_SRC, ma},
                              {DNNL_ARG_WEIGHTS, mbm},
                              {DNNL_ARG_DST, mc},
                              {DNNL_ARG_SCRATCHPAD, ms}});
    stream.wait();
    if (prev != 1) omp_set_num_threads(prev);
  } catch (const dnnl::error& e) {
    return InternalError(std::string("bf16 matmul (oneDNN) failed for m=") + std::to_string(mb) +
                         " n=" + std::to_string(nb) + " k=" + std::to_string(k) + ": " + e.what());
  }
  return OkStatus();
}

}  // namespace

Status SgemmBf16(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
                 int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc,
                 int threads) {
  thread_local std::vector<uint16_t> a16, b16;  // grow to the largest operands, then reused
  const int cast_threads = InParallelRegion() ? 1 : NumThreads();
  const uint16_t* a_bf16 = Operand(a, ta ? k : m, ta ? m : k, lda, a16, cast_threads);
  const uint16_t* b_bf16 = Operand(b, tb ? n : k, tb ? k : n, ldb, b16, cast_threads);
  if (threads <= 1 || InParallelRegion()) {
    return Bf16Tile(ta, tb, m, n, k, alpha, a_bf16, b_bf16, beta, c, ldc, 0, m, 0, n);
  }
  // As the f32 path: one tile of C per pool thread (edges on multiples of 16, AMX's tile
  // width); oneDNN runs each with a team of one, so no OpenMP team competes with the pool.
  // Multiples of 64 split mlp-mnist's 784 columns 448 / 336; with 16, 400 / 384 (2 threads:
  // mlp-mnist bf16 122.5-123.3k -> 124.2-125.7k samples/s, gpt-tiny 14.8k -> 15.0k tokens/s).
  const GemmTiling g = ChooseGemmTiling(m, n, threads, 16);
  const int64_t dim = g.along_n ? n : m;
  std::vector<Status> status(size_t(g.tiles), OkStatus());
  ParallelChunks(g.tiles, threads, [&](int64_t t) {
    const int64_t begin = t * g.tile, size = std::min(g.tile, dim - begin);
    status[size_t(t)] =
        g.along_n ? Bf16Tile(ta, tb, m, n, k, alpha, a_bf16, b_bf16, beta, c, ldc, 0, m, begin, size)
                  : Bf16Tile(ta, tb, m, n, k, alpha, a_bf16, b_bf16, beta, c, ldc, begin, size, 0, n);
  });
  for (const Status& s : status) GANTRY_RETURN_IF_ERROR(s);
  return OkStatus();
}
#endif

}  // namespace gantry::kernels::cpu
