// MpiCommunicator: nonblocking MPI collectives wrapped in Work handles with deadlines.
#include "comm/mpi/mpi_communicator.h"

#include <mpi.h>

#include <climits>
#include <mutex>
#include <thread>

#include "comm/bootstrap/mpi_bootstrap.h"
#include "comm/reduce.h"
#include "comm/tcp/socket.h"

namespace gantry::comm {
namespace {

std::mutex& MpiMutex() {
  static std::mutex mu;
  return mu;
}

// MPI's own words for an error code, plus what it means here where that helps.
std::string MpiErrorText(int rc) {
  char text[MPI_MAX_ERROR_STRING] = {0};
  int len = 0;
  if (MPI_Error_string(rc, text, &len) != MPI_SUCCESS) len = 0;
  std::string out = "MPI error " + std::to_string(rc) +
                    (len > 0 ? " (" + std::string(text, size_t(len)) + ")" : std::string());
  int cls = 0;
  if (MPI_Error_class(rc, &cls) == MPI_SUCCESS && cls == MPI_ERR_TRUNCATE) {
    out += ": a peer sent more elements than this rank receives (the ranks' counts differ)";
  }
  return out;
}

// Process-wide MPI handles for the 16-bit float types and their user ops.
MPI_Datatype g_bf16 = MPI_DATATYPE_NULL, g_f16 = MPI_DATATYPE_NULL;
MPI_Op g_ops[4] = {MPI_OP_NULL, MPI_OP_NULL, MPI_OP_NULL, MPI_OP_NULL};

template <ReduceOp kOp>
void HalfOp(void* in, void* inout, int* len, MPI_Datatype* type) {
  DataType d = *type == g_bf16 ? DataType::kBF16 : DataType::kF16;
  ReduceInto(inout, inout, in, static_cast<size_t>(*len), d, kOp);
}

void InitTypes() {
  if (g_bf16 != MPI_DATATYPE_NULL) return;
  MPI_Type_contiguous(2, MPI_BYTE, &g_bf16);
  MPI_Type_commit(&g_bf16);
  MPI_Type_contiguous(2, MPI_BYTE, &g_f16);
  MPI_Type_commit(&g_f16);
  MPI_Op_create(&HalfOp<ReduceOp::kSum>, 1, &g_ops[0]);
  MPI_Op_create(&HalfOp<ReduceOp::kMax>, 1, &g_ops[2]);
  MPI_Op_create(&HalfOp<ReduceOp::kMin>, 1, &g_ops[3]);
}

MPI_Datatype TypeOf(DataType d) {
  switch (d) {
    case DataType::kF32: return MPI_FLOAT;
    case DataType::kI32: return MPI_INT32_T;
    case DataType::kBF16: return g_bf16;
    case DataType::kF16: return g_f16;
  }
  return MPI_BYTE;
}

MPI_Op OpOf(DataType d, ReduceOp op) {
  const bool half = d == DataType::kBF16 || d == DataType::kF16;
  switch (op) {
    case ReduceOp::kSum:
    case ReduceOp::kAvg: return half ? g_ops[0] : MPI_SUM;
    case ReduceOp::kMax: return half ? g_ops[2] : MPI_MAX;
    case ReduceOp::kMin: return half ? g_ops[3] : MPI_MIN;
  }
  return MPI_SUM;
}

class MpiWork : public Work {
 public:
  MpiWork(MPI_Request req, std::string label, Deadline deadline, std::function<void()> after,
          std::shared_ptr<CommState> state)
      : req_(req), label_(std::move(label)), start_(Clock::now()), deadline_(deadline),
        after_(std::move(after)), state_(std::move(state)) {}

  Status Wait(std::chrono::milliseconds timeout) override {
    const Deadline wait_until = Clock::now() + timeout;
    for (int spins = 0;; ++spins) {
      if (Poll()) return status_;
      if (state_->failed()) return state_->error();
      const auto now = Clock::now();
      if (now >= deadline_) {
        Status s = DeadlineExceededError(label_ + ": MPI did not complete it within " +
                                         SecondsSince(start_) + "; a rank is stuck or dead "
                                         "(MPI cannot say which): check every rank's log");
        state_->Fail(s);
        MarkMpiFailed();
        return s;
      }
      if (now >= wait_until) return DeadlineExceededError(label_ + ": still running");
      if (spins > 100) std::this_thread::sleep_for(std::chrono::microseconds(20));
    }
  }
  bool Done() const override { return const_cast<MpiWork*>(this)->Poll(); }

 private:
  bool Poll() {
    std::lock_guard<std::mutex> lock(mu_);
    if (done_) return true;
    int flag = 0;
    int rc;
    {
      std::lock_guard<std::mutex> mpi(MpiMutex());
      rc = MPI_Test(&req_, &flag, MPI_STATUS_IGNORE);
    }
    if (rc != MPI_SUCCESS) {
      // The communicator is broken from here on, as with every other backend's errors (a
      // truncated receive used to leave it usable for the next collective).
      status_ = InternalError(label_ + ": " + MpiErrorText(rc));
      state_->Fail(status_);
      MarkMpiFailed();
      done_ = true;
    } else if (flag) {
      if (after_) after_();
      done_ = true;
    }
    return done_;
  }
  std::mutex mu_;
  MPI_Request req_;
  std::string label_;
  Clock::time_point start_;
  Deadline deadline_;
  std::function<void()> after_;
  std::shared_ptr<CommState> state_;
  bool done_ = false;
  Status status_;
};

}  // namespace

struct MpiCommunicator::Impl {
  MPI_Comm comm = MPI_COMM_NULL;
  CommOptions options;
  std::shared_ptr<CommState> state = std::make_shared<CommState>();
  uint64_t seq = 0;

  // Issues `start` (which fills the request) under the MPI mutex and wraps it.
  WorkPtr Issue(OpLabel label, size_t count, const std::function<int(MPI_Request*)>& start,
                std::function<void()> after = nullptr) {
    if (state->failed()) return MakeDoneWork(state->error());
    if (count > static_cast<size_t>(INT_MAX)) {
      return MakeDoneWork(InvalidArgumentError(label.ToString() + ": MPI counts are int; split "
                                               "buffers above 2^31-1 elements"));
    }
    MPI_Request req;
    int rc;
    {
      std::lock_guard<std::mutex> lock(MpiMutex());
      rc = start(&req);
    }
    if (rc != MPI_SUCCESS) {
      Status s = InternalError(label.ToString() + ": " + MpiErrorText(rc));
      state->Fail(s);
      MarkMpiFailed();
      return MakeDoneWork(s);
    }
    return std::make_shared<MpiWork>(req, label.ToString(), DeadlineAfter(options.timeout),
                                     std::move(after), state);
  }
};

MpiCommunicator::MpiCommunicator(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

MpiCommunicator::~MpiCommunicator() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized && impl_->comm != MPI_COMM_NULL && !impl_->state->failed()) {
    std::lock_guard<std::mutex> lock(MpiMutex());
    MPI_Comm_free(&impl_->comm);
  }
}

StatusOr<std::unique_ptr<MpiCommunicator>> MpiCommunicator::Create(const CommOptions& options) {
  if (!RunningUnderMpirun()) {
    return UnavailableError("mpi backend: this process was not started by mpirun (no "
                            "OMPI_COMM_WORLD_SIZE); use mpirun, or backend tcp/shm/auto");
  }
  GANTRY_RETURN_IF_ERROR(EnsureMpiInitialized());
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  MPI_Request req;
  {
    std::lock_guard<std::mutex> lock(MpiMutex());
    InitTypes();
    // Nonblocking, so a rank that never arrives is a timeout here rather than a hang.
    if (const int rc = MPI_Comm_idup(MPI_COMM_WORLD, &impl->comm, &req); rc != MPI_SUCCESS) {
      return InternalError("mpi backend: MPI_Comm_idup failed with code " + std::to_string(rc));
    }
  }
  GANTRY_RETURN_IF_ERROR(WaitMpi(
      [&](int* flag) {
        std::lock_guard<std::mutex> lock(MpiMutex());
        return MPI_Test(&req, flag, MPI_STATUS_IGNORE);
      },
      options.timeout, "mpi backend: duplicating MPI_COMM_WORLD (every rank must create it)"));
  std::lock_guard<std::mutex> lock(MpiMutex());
  MPI_Comm_set_errhandler(impl->comm, MPI_ERRORS_RETURN);
  std::unique_ptr<MpiCommunicator> c(new MpiCommunicator(std::move(impl)));
  MPI_Comm_rank(c->impl_->comm, &c->rank_);
  MPI_Comm_size(c->impl_->comm, &c->size_);
  return c;
}

void MpiCommunicator::Abort(const Status& reason) {
  MarkMpiFailed();  // a peer may be inside a collective with us: leave without MPI_Finalize
  impl_->state->Fail(AbortedError("mpi communicator aborted: " + reason.ToString()));
}

Status MpiCommunicator::AsyncError() const {
  return impl_->state->failed() ? impl_->state->error() : OkStatus();
}

WorkPtr MpiCommunicator::Allreduce(const void* send, void* recv, size_t count, DataType dtype,
                                   ReduceOp op) {
  OpLabel label{"allreduce", ++impl_->seq, count, dtype, std::string(ReduceOpName(op))};
  const int n = size_;
  return impl_->Issue(label, count, [&](MPI_Request* r) {
    return MPI_Iallreduce(send == recv ? MPI_IN_PLACE : send, recv, static_cast<int>(count),
                          TypeOf(dtype), OpOf(dtype, op), impl_->comm, r);
  }, op == ReduceOp::kAvg ? std::function<void()>([=] { FinishAverage(recv, count, dtype, n); })
                          : nullptr);
}

WorkPtr MpiCommunicator::Broadcast(void* data, size_t count, DataType dtype, int root) {
  OpLabel label{"broadcast", ++impl_->seq, count, dtype, "root " + std::to_string(root)};
  if (root < 0 || root >= size_) {
    return MakeDoneWork(InvalidArgumentError(label.ToString() + ": root out of range"));
  }
  return impl_->Issue(label, count, [&](MPI_Request* r) {
    return MPI_Ibcast(data, static_cast<int>(count), TypeOf(dtype), root, impl_->comm, r);
  });
}

WorkPtr MpiCommunicator::Allgather(const void* send, void* recv, size_t count, DataType dtype) {
  OpLabel label{"allgather", ++impl_->seq, count, dtype, ""};
  const bool in_place =
      send == static_cast<const char*>(recv) + rank_ * count * DataTypeSize(dtype);
  return impl_->Issue(label, count, [&](MPI_Request* r) {
    return MPI_Iallgather(in_place ? MPI_IN_PLACE : send, static_cast<int>(count), TypeOf(dtype),
                          recv, static_cast<int>(count), TypeOf(dtype), impl_->comm, r);
  });
}

WorkPtr MpiCommunicator::ReduceScatter(const void* send, void* recv, size_t count, DataType dtype,
                                       ReduceOp op) {
  OpLabel label{"reduce_scatter", ++impl_->seq, count, dtype, std::string(ReduceOpName(op))};
  const int n = size_;
  return impl_->Issue(label, count * size_, [&](MPI_Request* r) {
    return MPI_Ireduce_scatter_block(send, recv, static_cast<int>(count), TypeOf(dtype),
                                     OpOf(dtype, op), impl_->comm, r);
  }, op == ReduceOp::kAvg ? std::function<void()>([=] { FinishAverage(recv, count, dtype, n); })
                          : nullptr);
}

WorkPtr MpiCommunicator::Send(const void* data, size_t count, DataType dtype, int peer,
                              uint32_t tag) {
  OpLabel label{"send", ++impl_->seq, count, dtype, "to rank " + std::to_string(peer)};
  if (peer < 0 || peer >= size_ || peer == rank_ || tag > 32767) {
    return MakeDoneWork(InvalidArgumentError(label.ToString() + ": bad peer or tag > 32767"));
  }
  return impl_->Issue(label, count, [&](MPI_Request* r) {
    return MPI_Isend(data, static_cast<int>(count), TypeOf(dtype), peer, static_cast<int>(tag),
                     impl_->comm, r);
  });
}

WorkPtr MpiCommunicator::Recv(void* data, size_t count, DataType dtype, int peer, uint32_t tag) {
  OpLabel label{"recv", ++impl_->seq, count, dtype, "from rank " + std::to_string(peer)};
  if (peer < 0 || peer >= size_ || peer == rank_ || tag > 32767) {
    return MakeDoneWork(InvalidArgumentError(label.ToString() + ": bad peer or tag > 32767"));
  }
  return impl_->Issue(label, count, [&](MPI_Request* r) {
    return MPI_Irecv(data, static_cast<int>(count), TypeOf(dtype), peer, static_cast<int>(tag),
                     impl_->comm, r);
  });
}

WorkPtr MpiCommunicator::Barrier() {
  OpLabel label{"barrier", ++impl_->seq, 0, DataType::kI32, ""};
  return impl_->Issue(label, 0, [&](MPI_Request* r) { return MPI_Ibarrier(impl_->comm, r); });
}

}  // namespace gantry::comm
