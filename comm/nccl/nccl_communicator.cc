// NcclCommunicator: unique-id exchange, non-blocking init with a deadline, and each op as an
// NCCL call on our stream plus a CUDA event that Work::Wait polls.
#include "comm/nccl/nccl_communicator.h"

#include <cuda_runtime.h>
#include <nccl.h>

#include <cstdio>
#include <cstring>
#include <mutex>
#include <thread>

#include "comm/lane.h"
#include "comm/tcp/socket.h"

namespace gantry::comm {
namespace {

Status CudaError(cudaError_t e, const std::string& what) {
  return Status(StatusCode::kDeviceError, what + ": " + cudaGetErrorString(e));
}

Status NcclError(ncclResult_t r, const std::string& what) {
  std::string last = ncclGetLastError(nullptr) ? ncclGetLastError(nullptr) : "";
  StatusCode code = r == ncclInvalidArgument || r == ncclInvalidUsage ? StatusCode::kInvalidArgument
                    : r == ncclRemoteError ? StatusCode::kRemoteError
                    : r == ncclSystemError ? StatusCode::kSystemError
                                           : StatusCode::kDeviceError;
  return Status(code, what + ": " + ncclGetErrorString(r) + (last.empty() ? "" : " (" + last + ")"));
}

ncclDataType_t TypeOf(DataType d) {
  switch (d) {
    case DataType::kF32: return ncclFloat32;
    case DataType::kBF16: return ncclBfloat16;
    case DataType::kF16: return ncclFloat16;
    case DataType::kI32: return ncclInt32;
  }
  return ncclFloat32;
}

ncclRedOp_t OpOf(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum: return ncclSum;
    case ReduceOp::kAvg: return ncclAvg;
    case ReduceOp::kMax: return ncclMax;
    case ReduceOp::kMin: return ncclMin;
  }
  return ncclSum;
}

std::string Hex(const void* p, size_t n) {
  std::string s;
  char b[3];
  for (size_t i = 0; i < n; ++i) {
    std::snprintf(b, sizeof(b), "%02x", static_cast<const unsigned char*>(p)[i]);
    s += b;
  }
  return s;
}

// The ncclComm_t, shared by the communicator and its Work handles. ncclCommAbort frees the
// comm, and Abort/Wait may run on other threads than the issuing one: every query, every op
// issued on the comm (Issue) and the one abort or destroy go through `mu`, and nothing touches
// the comm after it was aborted or destroyed.
struct NcclHandle {
  std::mutex mu;
  ncclComm_t comm = nullptr;
  bool aborted = false;  // aborted or destroyed: `comm` is gone

  // ncclCommGetAsyncError; ncclInvalidUsage once aborted (never reached: callers check first).
  ncclResult_t Query() {
    std::lock_guard<std::mutex> lock(mu);
    if (aborted || !comm) return ncclInvalidUsage;
    ncclResult_t r = ncclSuccess;
    ncclCommGetAsyncError(comm, &r);
    return r;
  }
  void AbortOnce() { Close(/*failed=*/true, Clock::now()); }
  // The communicator's end, once: abort a failed comm; finalize a healthy one (NCCL's order for
  // a non-blocking comm: ncclCommFinalize, poll until it is out of ncclInProgress, then
  // ncclCommDestroy), aborting it instead if that does not finish by `deadline` or fails.
  void Close(bool failed, Deadline deadline) {
    std::lock_guard<std::mutex> lock(mu);
    if (aborted || !comm) return;
    aborted = true;
    if (!failed) {
      ncclResult_t r = ncclCommFinalize(comm);
      while (r == ncclInProgress && Clock::now() < deadline) {
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
        if (ncclCommGetAsyncError(comm, &r) != ncclSuccess) r = ncclInternalError;
      }
      if (r == ncclSuccess) {
        ncclCommDestroy(comm);
        return;
      }
    }
    ncclCommAbort(comm);
  }
};

// Records `s` as the communicator's error; the first failure also aborts the comm.
void FailAndAbort(CommState& state, NcclHandle& handle, const Status& s) {
  if (state.Fail(s)) handle.AbortOnce();
}

}  // namespace

struct NcclCommunicator::Impl {
  int device = 0;
  std::shared_ptr<NcclHandle> handle = std::make_shared<NcclHandle>();
  ncclComm_t comm = nullptr;  // handle->comm, for the issuing thread's NCCL calls
  cudaStream_t stream = nullptr, user_stream = nullptr;
  CommOptions options;
  std::shared_ptr<CommState> state = std::make_shared<CommState>();
  uint64_t seq = 0;
  int32_t* barrier_buf = nullptr;

  // Waits until the comm is out of ncclInProgress (non-blocking init) or the deadline.
  Status WaitReady(const std::string& what, Deadline deadline) {
    for (;;) {
      const ncclResult_t r = handle->Query();
      if (r == ncclSuccess) return OkStatus();
      if (r != ncclInProgress) {
        Status s = NcclError(r, what);
        handle->AbortOnce();  // init failed: free what NCCL set up
        return s;
      }
      if (Clock::now() >= deadline) {
        handle->AbortOnce();
        return DeadlineExceededError(what + ": not done within the comm timeout; are all ranks "
                                     "running and able to reach each other (NCCL_SOCKET_IFNAME)?");
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }

  WorkPtr Issue(const OpLabel& label, const std::function<ncclResult_t()>& call);
  // After a call returned ncclInProgress: polls until NCCL has put it on the stream.
  Status WaitEnqueued(const OpLabel& label, Deadline deadline);
};

namespace {

class NcclWork : public Work {
 public:
  NcclWork(cudaEvent_t event, std::shared_ptr<NcclHandle> handle, std::string label,
           Deadline deadline, std::shared_ptr<CommState> state)
      : event_(event), handle_(std::move(handle)), label_(std::move(label)),
        start_(Clock::now()), deadline_(deadline), state_(std::move(state)) {}
  ~NcclWork() override { cudaEventDestroy(event_); }

  Status Wait(std::chrono::milliseconds timeout) override {
    const Deadline until = Clock::now() + timeout;
    for (;;) {
      const cudaError_t e = Query();
      if (e == cudaSuccess) {
        // An abort makes NCCL's kernels return early and the event complete over partial
        // data: once the communicator failed, a completion not seen before is that failure.
        if (!ok_seen_ && state_->failed()) return state_->error();
        ok_seen_ = true;
        return OkStatus();
      }
      if (e != cudaErrorNotReady) {  // a sticky CUDA error: the peers must not wait for us
        FailAndAbort(*state_, *handle_, CudaError(e, label_));
        return state_->error();
      }
      if (state_->failed()) return state_->error();
      const ncclResult_t r = handle_->Query();
      if (r != ncclSuccess && r != ncclInProgress) {
        Status s = NcclError(r, label_ + ": asynchronous NCCL error after " + SecondsSince(start_));
        FailAndAbort(*state_, *handle_, s);
        return state_->error();
      }
      const auto now = Clock::now();
      if (now >= deadline_) {
        Status s = DeadlineExceededError(label_ + ": not finished after " + SecondsSince(start_) +
                                         "; a peer rank is stuck or dead (NCCL cannot say which); "
                                         "the communicator was aborted");
        FailAndAbort(*state_, *handle_, s);
        return state_->error();
      }
      if (now >= until) {
        return DeadlineExceededError(label_ + ": still running after " + SecondsSince(start_));
      }
      std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
  }
  bool Done() const override { return Query() != cudaErrorNotReady; }

 private:
  // cudaEventQuery, without leaving its cudaErrorNotReady as this thread's last CUDA error
  // (the runtime records it there, and the next kernel launch check on this thread, e.g. the
  // trainer's next op, would report it as its own failure; PyTorch clears it the same way).
  cudaError_t Query() const {
    const cudaError_t e = cudaEventQuery(event_);
    if (e == cudaErrorNotReady) (void)cudaGetLastError();
    return e;
  }

  cudaEvent_t event_;
  std::shared_ptr<NcclHandle> handle_;
  std::string label_;
  Clock::time_point start_;
  Deadline deadline_;
  std::shared_ptr<CommState> state_;
  bool ok_seen_ = false;  // completed while the communicator was healthy
};

}  // namespace

WorkPtr NcclCommunicator::Impl::Issue(const OpLabel& label, const std::function<ncclResult_t()>& call) {
  if (state->failed()) return MakeDoneWork(state->error());
  const std::string what = label.ToString();
  // Any failure on the way skips an operation the peers did issue: the communicator is failed
  // and aborted so that they stop too, instead of waiting out their timeout.
  auto failed = [&](const Status& s) {
    FailAndAbort(*state, *handle, s);
    return MakeDoneWork(state->error());
  };
  if (cudaError_t e = cudaSetDevice(device); e != cudaSuccess) {
    return failed(CudaError(e, what + ": cudaSetDevice(" + std::to_string(device) + ")"));
  }
  // Order the op after the work queued on the user stream so far.
  cudaEvent_t ready = nullptr, done = nullptr;
  if (cudaError_t e = cudaEventCreateWithFlags(&ready, cudaEventDisableTiming); e != cudaSuccess) {
    return failed(CudaError(e, what + ": cudaEventCreate"));
  }
  cudaError_t e = cudaEventRecord(ready, user_stream);
  if (e == cudaSuccess) e = cudaStreamWaitEvent(stream, ready, 0);
  cudaEventDestroy(ready);
  if (e != cudaSuccess) return failed(CudaError(e, what + ": ordering after the user stream"));
  const Deadline deadline = DeadlineAfter(options.timeout);
  ncclResult_t r;
  {
    // Under the handle's lock: Abort or a timed-out Wait on another thread frees the comm.
    std::lock_guard<std::mutex> lock(handle->mu);
    if (handle->aborted || !handle->comm) {
      return MakeDoneWork(state->failed() ? state->error()
                                          : FailedPreconditionError(what + ": the communicator is closed"));
    }
    r = call();
  }
  // From here on a failure leaves this rank out of step with its peers, which did issue the
  // operation: the communicator is failed and aborted so that they stop too.
  if (r != ncclSuccess && r != ncclInProgress) {
    FailAndAbort(*state, *handle, NcclError(r, what));
    return MakeDoneWork(state->error());
  }
  // A non-blocking communicator may return ncclInProgress before the operation is on the
  // stream; an event recorded now would complete without it. Wait until NCCL has enqueued it.
  if (r == ncclInProgress) {
    Status s = WaitEnqueued(label, deadline);
    if (!s.ok()) return MakeDoneWork(s);
  }
  if (e = cudaEventCreateWithFlags(&done, cudaEventDisableTiming); e != cudaSuccess) {
    FailAndAbort(*state, *handle, CudaError(e, what + ": cudaEventCreate"));
    return MakeDoneWork(state->error());
  }
  if (e = cudaEventRecord(done, stream); e != cudaSuccess) {
    cudaEventDestroy(done);
    FailAndAbort(*state, *handle, CudaError(e, what));
    return MakeDoneWork(state->error());
  }
  return std::make_shared<NcclWork>(done, handle, what, deadline, state);
}

Status NcclCommunicator::Impl::WaitEnqueued(const OpLabel& label, Deadline deadline) {
  for (;;) {
    if (state->failed()) return state->error();
    const ncclResult_t r = handle->Query();
    if (r == ncclSuccess) return OkStatus();
    if (r != ncclInProgress) {
      FailAndAbort(*state, *handle, NcclError(r, label.ToString() + ": while enqueueing"));
      return state->error();
    }
    if (Clock::now() >= deadline) {
      Status s = DeadlineExceededError(label.ToString() + ": NCCL did not enqueue it within the "
                                       "comm timeout; the communicator was aborted");
      FailAndAbort(*state, *handle, s);
      return state->error();
    }
    std::this_thread::yield();
  }
}

NcclCommunicator::NcclCommunicator(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

NcclCommunicator::~NcclCommunicator() {
  // The comm, stream and buffer belong to the comm's device; the caller's device is restored.
  int previous = -1;
  const bool switched = cudaGetDevice(&previous) == cudaSuccess && previous != impl_->device &&
                        cudaSetDevice(impl_->device) == cudaSuccess;
  impl_->handle->Close(impl_->state->failed(), DeadlineAfter(impl_->options.timeout));
  if (impl_->stream) cudaStreamDestroy(impl_->stream);
  if (impl_->barrier_buf) cudaFree(impl_->barrier_buf);
  if (switched) cudaSetDevice(previous);
}

StatusOr<std::unique_ptr<NcclCommunicator>> NcclCommunicator::Create(Bootstrap& bootstrap,
                                                                     const CommOptions& options) {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    return FailedPreconditionError("nccl backend: no CUDA device visible on this host; use "
                                   "backend tcp/shm/auto for CPU training");
  }
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  impl->device = options.cuda_device >= 0 ? options.cuda_device : bootstrap.rank() % devices;
  if (cudaError_t e = cudaSetDevice(impl->device); e != cudaSuccess) {
    return CudaError(e, "nccl backend: cudaSetDevice(" + std::to_string(impl->device) + ")");
  }
  auto scope = bootstrap.NewScope("nccl");
  ncclUniqueId id;
  if (bootstrap.rank() == 0) {
    if (ncclResult_t r = ncclGetUniqueId(&id); r != ncclSuccess) return NcclError(r, "ncclGetUniqueId");
    GANTRY_RETURN_IF_ERROR(scope->Set("id", std::string(reinterpret_cast<char*>(&id), sizeof(id))));
  } else {
    GANTRY_ASSIGN_OR_RETURN(std::string blob, scope->Get("id", options.timeout));
    if (blob.size() != sizeof(id)) return DataLossError("nccl backend: bad unique id in the store");
    std::memcpy(&id, blob.data(), sizeof(id));
  }
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;
  ncclResult_t r = ncclCommInitRankConfig(&impl->comm, bootstrap.size(), id, bootstrap.rank(), &config);
  if (r != ncclSuccess && r != ncclInProgress) {
    if (impl->comm != nullptr) ncclCommAbort(impl->comm);  // what init may have set up
    return NcclError(r, "ncclCommInitRankConfig (rank " + std::to_string(bootstrap.rank()) +
                            " of " + std::to_string(bootstrap.size()) + ", cuda:" +
                            std::to_string(impl->device) + ")");
  }
  impl->handle->comm = impl->comm;
  GANTRY_RETURN_IF_ERROR(impl->WaitReady(
      "nccl init of rank " + std::to_string(bootstrap.rank()) + " of " +
          std::to_string(bootstrap.size()) + " on cuda:" + std::to_string(impl->device) +
          " (id " + Hex(&id, 8) + "..., timeout " +
          std::to_string(std::chrono::duration_cast<std::chrono::seconds>(options.timeout).count()) +
          " s)",
      DeadlineAfter(options.timeout)));
  // From here the communicator owns the comm: on a failure below, its destructor aborts it
  // (the state is marked failed first) and frees what was made.
  Impl& im = *impl;
  std::unique_ptr<NcclCommunicator> c(new NcclCommunicator(std::move(impl)));
  c->rank_ = bootstrap.rank();
  c->size_ = bootstrap.size();
  auto fail = [&](cudaError_t e, const char* what) {
    Status s = CudaError(e, std::string("nccl backend: ") + what);
    im.state->Fail(s);
    return s;
  };
  if (cudaError_t e = cudaStreamCreateWithFlags(&im.stream, cudaStreamNonBlocking); e != cudaSuccess) {
    return fail(e, "cudaStreamCreate");
  }
  if (cudaError_t e = cudaMalloc(&im.barrier_buf, sizeof(int32_t)); e != cudaSuccess) {
    return fail(e, "cudaMalloc(barrier)");
  }
  if (cudaError_t e = cudaMemset(im.barrier_buf, 0, sizeof(int32_t)); e != cudaSuccess) {
    return fail(e, "cudaMemset(barrier)");
  }
  return c;
}

int NcclCommunicator::device() const { return impl_->device; }
void NcclCommunicator::SetStream(void* s) { impl_->user_stream = static_cast<cudaStream_t>(s); }

void NcclCommunicator::Abort(const Status& reason) {
  FailAndAbort(*impl_->state, *impl_->handle,
               AbortedError("nccl communicator aborted: " + reason.ToString()));
}

Status NcclCommunicator::AsyncError() const {
  if (impl_->state->failed()) return impl_->state->error();
  const ncclResult_t r = impl_->handle->Query();
  return r == ncclSuccess || r == ncclInProgress ? OkStatus() : NcclError(r, "nccl async error");
}

WorkPtr NcclCommunicator::Allreduce(const void* send, void* recv, size_t count, DataType dtype,
                                    ReduceOp op) {
  OpLabel l{"allreduce", ++impl_->seq, count, dtype, std::string(ReduceOpName(op))};
  return impl_->Issue(l, [&] {
    return ncclAllReduce(send, recv, count, TypeOf(dtype), OpOf(op), impl_->comm, impl_->stream);
  });
}

WorkPtr NcclCommunicator::Broadcast(void* data, size_t count, DataType dtype, int root) {
  OpLabel l{"broadcast", ++impl_->seq, count, dtype, "root " + std::to_string(root)};
  return impl_->Issue(l, [&] {
    return ncclBroadcast(data, data, count, TypeOf(dtype), root, impl_->comm, impl_->stream);
  });
}

WorkPtr NcclCommunicator::Allgather(const void* send, void* recv, size_t count, DataType dtype) {
  OpLabel l{"allgather", ++impl_->seq, count, dtype, ""};
  return impl_->Issue(l, [&] {
    return ncclAllGather(send, recv, count, TypeOf(dtype), impl_->comm, impl_->stream);
  });
}

WorkPtr NcclCommunicator::ReduceScatter(const void* send, void* recv, size_t count, DataType dtype,
                                        ReduceOp op) {
  OpLabel l{"reduce_scatter", ++impl_->seq, count, dtype, std::string(ReduceOpName(op))};
  return impl_->Issue(l, [&] {
    return ncclReduceScatter(send, recv, count, TypeOf(dtype), OpOf(op), impl_->comm, impl_->stream);
  });
}

WorkPtr NcclCommunicator::Send(const void* data, size_t count, DataType dtype, int peer, uint32_t) {
  OpLabel l{"send", ++impl_->seq, count, dtype, "to rank " + std::to_string(peer)};
  return impl_->Issue(l, [&] {
    return ncclSend(data, count, TypeOf(dtype), peer, impl_->comm, impl_->stream);
  });
}

WorkPtr NcclCommunicator::Recv(void* data, size_t count, DataType dtype, int peer, uint32_t) {
  OpLabel l{"recv", ++impl_->seq, count, dtype, "from rank " + std::to_string(peer)};
  return impl_->Issue(l, [&] {
    return ncclRecv(data, count, TypeOf(dtype), peer, impl_->comm, impl_->stream);
  });
}

WorkPtr NcclCommunicator::Barrier() {
  OpLabel l{"barrier", ++impl_->seq, 1, DataType::kI32, ""};
  return impl_->Issue(l, [&] {
    return ncclAllReduce(impl_->barrier_buf, impl_->barrier_buf, 1, ncclInt32, ncclSum,
                         impl_->comm, impl_->stream);
  });
}

}  // namespace gantry::comm
