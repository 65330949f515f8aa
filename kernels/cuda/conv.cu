// 2-D convolution (NCHW, cross-correlation as PyTorch) on cuDNN's legacy convolution API.
// Algorithms come from cuDNN's heuristics (the first deterministic one within 1 GiB of
// workspace), once per (device, shape) and cached, so Conv2dWorkspaceElements and the ops
// agree on the workspace. Full f32 math (CUDNN_FMA_MATH)
// unless GANTRY_CUDA_TF32=1.
#include <cuda_runtime.h>
#include <cudnn.h>

#include <array>
#include <map>
#include <mutex>
#include <string>

#include "kernels/cuda/check.h"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/context.h"
#include "kernels/cuda/cuda_ops.h"

namespace gantry::kernels::cuda {

namespace {

constexpr int kBiasGradBlock = 256;

// db[c] += sum over images and pixels of dy[n, c, :, :]: one block per channel, each thread a
// fixed strided share, then a fixed tree (BlockSum): the same bits on every run.
__global__ void BiasGradNchwKernel(const float* dy, int64_t n, int64_t c, int64_t hw, float* db) {
  __shared__ float shared[32];
  const int64_t ch = blockIdx.x;
  float acc = 0.0f;
  for (int64_t i = threadIdx.x; i < n * hw; i += blockDim.x) {
    const int64_t img = i / hw, pix = i - img * hw;
    acc += dy[(img * c + ch) * hw + pix];
  }
  acc = BlockSum(acc, shared);
  if (threadIdx.x == 0) db[ch] += acc;
}

}  // namespace
namespace {

// RAII for the descriptors of one call (host-side objects; cheap to create).
struct Descs {
  cudnnTensorDescriptor_t x = nullptr, y = nullptr, bias = nullptr;
  cudnnFilterDescriptor_t w = nullptr;
  cudnnConvolutionDescriptor_t conv = nullptr;
  ~Descs() {
    if (x) cudnnDestroyTensorDescriptor(x);
    if (y) cudnnDestroyTensorDescriptor(y);
    if (bias) cudnnDestroyTensorDescriptor(bias);
    if (w) cudnnDestroyFilterDescriptor(w);
    if (conv) cudnnDestroyConvolutionDescriptor(conv);
  }
};

using Key = std::array<int64_t, 10>;  // device, N, Cin, H, W, Cout, KH, KW, stride, padding
struct Algos {
  cudnnConvolutionFwdAlgo_t fwd;
  cudnnConvolutionBwdDataAlgo_t bwd_data;
  cudnnConvolutionBwdFilterAlgo_t bwd_filter;
  size_t workspace_bytes;
  // The math type each choice was validated with (the descriptor is set to it before the call).
  cudnnMathType_t fwd_math = CUDNN_FMA_MATH, bwd_data_math = CUDNN_FMA_MATH,
                  bwd_filter_math = CUDNN_FMA_MATH;
};

std::mutex algo_mu;
std::map<Key, Algos>& AlgoCache() {
  static auto* cache = new std::map<Key, Algos>();
  return *cache;
}

Status CheckDims(const Shape& x, const Shape& w, const Conv2dOptions& opts) {
  if (x.size() != 4 || w.size() != 4 || x[1] != w[1] || opts.stride <= 0 || opts.padding < 0) {
    return InvalidArgumentError("Conv2d: x " + ShapeToString(x) + " and w " + ShapeToString(w) +
                                " must be [N, Cin, H, W] and [Cout, Cin, KH, KW] with stride > 0");
  }
  return OkStatus();
}

Status MakeDescs(const Shape& x, const Shape& w, const Conv2dOptions& opts, Descs& d) {
  GANTRY_RETURN_IF_ERROR(CheckDims(x, w, opts));
  auto i = [](int64_t v) { return static_cast<int>(v); };
  GANTRY_CUDNN_RETURN_IF_ERROR(cudnnCreateTensorDescriptor(&d.x));
  GANTRY_CUDNN_RETURN_IF_ERROR(cudnnSetTensor4dDescriptor(d.x, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT,
                                                          i(x[0]), i(x[1]), i(x[2]), i(x[3])));
  GANTRY_CUDNN_RETURN_IF_ERROR(cudnnCreateFilterDescriptor(&d.w));
  GANTRY_CUDNN_RETURN_IF_ERROR(cudnnSetFilter4dDescriptor(d.w, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NCHW,
                                                          i(w[0]), i(w[1]), i(w[2]), i(w[3])));
  GANTRY_CUDNN_RETURN_IF_ERROR(cudnnCreateConvolutionDescriptor(&d.conv));
  GANTRY_CUDNN_RETURN_IF_ERROR(cudnnSetConvolution2dDescriptor(
      d.conv, opts.padding, opts.padding, opts.stride, opts.stride, 1, 1,
      CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
  GANTRY_CUDNN_RETURN_IF_ERROR(
      cudnnSetConvolutionMathType(d.conv, UseTf32() ? CUDNN_DEFAULT_MATH : CUDNN_FMA_MATH));
  int n, c, h, wd;
  GANTRY_CUDNN_RETURN_IF_ERROR(
      cudnnGetConvolution2dForwardOutputDim(d.conv, d.x, d.w, &n, &c, &h, &wd));
  GANTRY_CUDNN_RETURN_IF_ERROR(cudnnCreateTensorDescriptor(&d.y));
  GANTRY_CUDNN_RETURN_IF_ERROR(
      cudnnSetTensor4dDescriptor(d.y, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, n, c, h, wd));
  GANTRY_CUDNN_RETURN_IF_ERROR(cudnnCreateTensorDescriptor(&d.bias));
  GANTRY_CUDNN_RETURN_IF_ERROR(
      cudnnSetTensor4dDescriptor(d.bias, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, 1, c, 1, 1));
  return OkStatus();
}

StatusOr<cudnnHandle_t> Handle(const OpEnv& env) {
  if (env.ctx->cudnn == nullptr) GANTRY_CUDNN_RETURN_IF_ERROR(cudnnCreate(&env.ctx->cudnn));
  GANTRY_CUDNN_RETURN_IF_ERROR(cudnnSetStream(env.ctx->cudnn, env.stream));
  return env.ctx->cudnn;
}

// Workspace limit per algorithm: a heuristic choice above it is passed over for the next one.
constexpr size_t kMaxConvWorkspaceBytes = size_t{1} << 30;

// The first of cuDNN's heuristic candidates that is supported, deterministic (no atomics: some
// backward algorithms, e.g. BWD_DATA_ALGO_0 and BWD_FILTER_ALGO_0/3, sum in a varying order,
// which would break the byte-identical resume of a GPU run) and within the workspace limit.
// Since cuDNN 7.4 a candidate is an (algorithm, math type) pair: only those with the math type
// set on the descriptor are taken (another would run TF32 in the f32 path, or be refused).
template <typename Perf>
int FirstUsable(const Perf* perf, int got) {
  // f32 math (FMA) unless TF32 was asked for; then tensor-op candidates are welcome too.
  auto wanted = [](cudnnMathType_t m) {
    return UseTf32() ? m != CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION : m == CUDNN_FMA_MATH;
  };
  for (int i = 0; i < got; ++i) {
    if (perf[i].status == CUDNN_STATUS_SUCCESS && perf[i].determinism == CUDNN_DETERMINISTIC &&
        perf[i].memory <= kMaxConvWorkspaceBytes && wanted(perf[i].mathType)) {
      return i;
    }
  }
  return -1;
}

// The candidates cuDNN offered, for the error: "algo 1 (status 0, deterministic 1, math 2,
// 4096 B)".
template <typename Perf>
std::string Candidates(const Perf* perf, int got) {
  std::string out;
  for (int i = 0; i < got; ++i) {
    out += std::string(i ? "; " : "") + "algo " + std::to_string(int(perf[i].algo)) +
           " (status " + std::to_string(int(perf[i].status)) + ", deterministic " +
           std::to_string(int(perf[i].determinism)) + ", math " +
           std::to_string(int(perf[i].mathType)) + ", " + std::to_string(perf[i].memory) + " B)";
  }
  return out;
}

template <typename Perf>
Status NoAlgorithm(const char* direction, const Perf* perf, int got) {
  return InternalError(std::string("cuDNN offers no deterministic ") + direction +
                       " convolution algorithm with math type " +
                       (UseTf32() ? "DEFAULT" : "FMA") + " within " +
                       std::to_string(kMaxConvWorkspaceBytes >> 20) + " MiB of workspace for "
                       "this shape; candidates: " + Candidates(perf, got));
}

StatusOr<Algos> ChooseAlgos(cudnnHandle_t h, const Descs& d) {
  constexpr int kMax = 16;
  int got = 0;
  Algos a{};
  cudnnConvolutionFwdAlgoPerf_t fwd[kMax];
  GANTRY_CUDNN_RETURN_IF_ERROR(
      cudnnGetConvolutionForwardAlgorithm_v7(h, d.x, d.w, d.conv, d.y, kMax, &got, fwd));
  int i = FirstUsable(fwd, got);
  if (i < 0) return NoAlgorithm("forward", fwd, got);
  a.fwd = fwd[i].algo;
  a.fwd_math = fwd[i].mathType;
  cudnnConvolutionBwdDataAlgoPerf_t bd[kMax];
  GANTRY_CUDNN_RETURN_IF_ERROR(
      cudnnGetConvolutionBackwardDataAlgorithm_v7(h, d.w, d.y, d.conv, d.x, kMax, &got, bd));
  i = FirstUsable(bd, got);
  if (i < 0) return NoAlgorithm("backward-data", bd, got);
  a.bwd_data = bd[i].algo;
  a.bwd_data_math = bd[i].mathType;
  cudnnConvolutionBwdFilterAlgoPerf_t bf[kMax];
  GANTRY_CUDNN_RETURN_IF_ERROR(
      cudnnGetConvolutionBackwardFilterAlgorithm_v7(h, d.x, d.y, d.conv, d.w, kMax, &got, bf));
  i = FirstUsable(bf, got);
  if (i < 0) return NoAlgorithm("backward-filter", bf, got);
  a.bwd_filter = bf[i].algo;
  a.bwd_filter_math = bf[i].mathType;
  size_t s1 = 0, s2 = 0, s3 = 0;
  GANTRY_CUDNN_RETURN_IF_ERROR(cudnnSetConvolutionMathType(d.conv, a.fwd_math));
  GANTRY_CUDNN_RETURN_IF_ERROR(
      cudnnGetConvolutionForwardWorkspaceSize(h, d.x, d.w, d.conv, d.y, a.fwd, &s1));
  GANTRY_CUDNN_RETURN_IF_ERROR(cudnnSetConvolutionMathType(d.conv, a.bwd_data_math));
  GANTRY_CUDNN_RETURN_IF_ERROR(
      cudnnGetConvolutionBackwardDataWorkspaceSize(h, d.w, d.y, d.conv, d.x, a.bwd_data, &s2));
  GANTRY_CUDNN_RETURN_IF_ERROR(cudnnSetConvolutionMathType(d.conv, a.bwd_filter_math));
  GANTRY_CUDNN_RETURN_IF_ERROR(cudnnGetConvolutionBackwardFilterWorkspaceSize(
      h, d.x, d.y, d.conv, d.w, a.bwd_filter, &s3));
  a.workspace_bytes = s1 > s2 ? (s1 > s3 ? s1 : s3) : (s2 > s3 ? s2 : s3);
  return a;
}

Key MakeKey(int device, const Shape& x, const Shape& w, const Conv2dOptions& opts) {
  return Key{device, x[0], x[1], x[2], x[3], w[0], w[2], w[3], opts.stride, opts.padding};
}

StatusOr<Algos> CachedAlgos(const OpEnv& env, cudnnHandle_t h, const Shape& x, const Shape& w,
                            const Conv2dOptions& opts, const Descs& d) {
  const Key key = MakeKey(env.device, x, w, opts);
  std::lock_guard<std::mutex> lock(algo_mu);
  auto it = AlgoCache().find(key);
  if (it != AlgoCache().end()) return it->second;
  GANTRY_ASSIGN_OR_RETURN(Algos a, ChooseAlgos(h, d));
  AlgoCache().emplace(key, a);
  return a;
}

// Descriptors, handle and algorithms for one call; checks the workspace is big enough.
struct Prepared {
  Descs d;
  cudnnHandle_t h = nullptr;
  Algos algos{};
};
Status Prepare(const char* op, const OpEnv& env, const Tensor& x, const Tensor& w,
               const Conv2dOptions& opts, const Tensor& workspace, Prepared& p) {
  GANTRY_RETURN_IF_ERROR(CheckOperand(op, "x", x, env));
  GANTRY_RETURN_IF_ERROR(CheckOperand(op, "w", w, env));
  GANTRY_RETURN_IF_ERROR(CheckOperand(op, "workspace", workspace, env));
  GANTRY_RETURN_IF_ERROR(MakeDescs(x.shape(), w.shape(), opts, p.d));
  GANTRY_ASSIGN_OR_RETURN(p.h, Handle(env));
  GANTRY_ASSIGN_OR_RETURN(p.algos, CachedAlgos(env, p.h, x.shape(), w.shape(), opts, p.d));
  if (workspace.nbytes() < p.algos.workspace_bytes) {
    return InvalidArgumentError(std::string(op) + ": workspace " + workspace.ToString() +
                                " is smaller than the " + std::to_string(p.algos.workspace_bytes) +
                                " bytes cuDNN needs; size it with Conv2dWorkspaceElements(x, w, "
                                "opts, cuda device)");
  }
  return OkStatus();
}

}  // namespace

int64_t Conv2dWorkspaceElements(const Shape& x, const Shape& w, const Conv2dOptions& opts,
                                Device device) {
  if (!device.is_cuda() || device.index >= DeviceCount() || !CheckDims(x, w, opts).ok()) return 0;
  {
    std::lock_guard<std::mutex> lock(algo_mu);
    auto it = AlgoCache().find(MakeKey(device.index, x, w, opts));
    if (it != AlgoCache().end()) {
      return static_cast<int64_t>((it->second.workspace_bytes + sizeof(float) - 1) / sizeof(float));
    }
  }
  Tensor probe = Tensor::Wrap(nullptr, {0}, DType::kF32, device);
  // A pending index error stays for the next op to report (this probe cannot return it).
  StatusOr<OpEnv> env = BeginOp("Conv2dWorkspaceElements", probe, /*take_index_error=*/false);
  if (!env.ok()) return 0;
  Descs d;
  if (!MakeDescs(x, w, opts, d).ok()) return 0;
  StatusOr<cudnnHandle_t> h = Handle(*env);
  if (!h.ok()) return 0;
  StatusOr<Algos> a = CachedAlgos(*env, *h, x, w, opts, d);
  if (!a.ok()) return 0;  // the op itself reports the cuDNN error
  return static_cast<int64_t>((a->workspace_bytes + sizeof(float) - 1) / sizeof(float));
}

Status Conv2dForward(const Tensor& x, const Tensor& w, const Tensor* b, const Conv2dOptions& opts,
                     Tensor& y, Tensor& workspace) {
  constexpr const char* kOp = "Conv2dForward";
  GANTRY_ASSIGN_OR_RETURN(OpEnv env, BeginOp(kOp, x));
  Prepared p;
  GANTRY_RETURN_IF_ERROR(Prepare(kOp, env, x, w, opts, workspace, p));
  GANTRY_RETURN_IF_ERROR(CheckOperand(kOp, "y", y, env));
  const float one = 1.0f, zero = 0.0f;
  GANTRY_CUDNN_RETURN_IF_ERROR(cudnnSetConvolutionMathType(p.d.conv, p.algos.fwd_math));
  GANTRY_CUDNN_RETURN_IF_ERROR(cudnnConvolutionForward(
      p.h, &one, p.d.x, x.raw(), p.d.w, w.raw(), p.d.conv, p.algos.fwd, workspace.raw(),
      p.algos.workspace_bytes, &zero, p.d.y, y.raw()));
  if (b != nullptr) {
    GANTRY_RETURN_IF_ERROR(CheckOperand(kOp, "b", *b, env));
    GANTRY_CUDNN_RETURN_IF_ERROR(cudnnAddTensor(p.h, &one, p.d.bias, b->raw(), &one, p.d.y, y.raw()));
  }
  return OkStatus();
}

Status Conv2dBackward(const Tensor& x, const Tensor& w, const Tensor& dy,
                      const Conv2dOptions& opts, Tensor* dx, Tensor& dw, Tensor* db,
                      Tensor& workspace) {
  constexpr const char* kOp = "Conv2dBackward";
  GANTRY_ASSIGN_OR_RETURN(OpEnv env, BeginOp(kOp, x));
  Prepared p;
  GANTRY_RETURN_IF_ERROR(Prepare(kOp, env, x, w, opts, workspace, p));
  GANTRY_RETURN_IF_ERROR(CheckOperand(kOp, "dy", dy, env));
  GANTRY_RETURN_IF_ERROR(CheckOperand(kOp, "dw", dw, env));
  const float one = 1.0f, zero = 0.0f;
  if (dx != nullptr) {  // overwrite
    GANTRY_RETURN_IF_ERROR(CheckOperand(kOp, "dx", *dx, env));
    GANTRY_CUDNN_RETURN_IF_ERROR(cudnnSetConvolutionMathType(p.d.conv, p.algos.bwd_data_math));
    GANTRY_CUDNN_RETURN_IF_ERROR(cudnnConvolutionBackwardData(
        p.h, &one, p.d.w, w.raw(), p.d.y, dy.raw(), p.d.conv, p.algos.bwd_data, workspace.raw(),
        p.algos.workspace_bytes, &zero, p.d.x, dx->raw()));
  }
  // Parameter gradients accumulate (beta = 1).
  GANTRY_CUDNN_RETURN_IF_ERROR(cudnnSetConvolutionMathType(p.d.conv, p.algos.bwd_filter_math));
  GANTRY_CUDNN_RETURN_IF_ERROR(cudnnConvolutionBackwardFilter(
      p.h, &one, p.d.x, x.raw(), p.d.y, dy.raw(), p.d.conv, p.algos.bwd_filter, workspace.raw(),
      p.algos.workspace_bytes, &one, p.d.w, dw.raw()));
  if (db != nullptr) {
    GANTRY_RETURN_IF_ERROR(CheckOperand(kOp, "db", *db, env));
    // Our own fixed-order sum: cuDNN does not promise cudnnConvolutionBackwardBias is
    // deterministic, and a GPU run must resume byte-identically.
    const int64_t n = dy.dim(0), c = dy.dim(1), hw = dy.dim(2) * dy.dim(3);
    if (c > 0) {
      BiasGradNchwKernel<<<static_cast<unsigned>(c), kBiasGradBlock, 0, env.stream>>>(
          dy.f32(), n, c, hw, db->f32());
      GANTRY_CUDA_CHECK_LAUNCH("BiasGradNchwKernel");
    }
  }
  return OkStatus();
}

}  // namespace gantry::kernels::cuda
