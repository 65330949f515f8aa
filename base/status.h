// Status and StatusOr<T>: how every library call in Gantry reports failure.
// A Status carries a code that says who must act (caller, peer, system, device), a message
// that names the failing input, and a context chain ("file:line: ...") added on the way up.
// Not thread-safe per object; copying is cheap when ok.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace gantry {

enum class StatusCode {
  kOk = 0,
  kInvalidArgument,     // the caller passed something wrong: fix the input
  kNotFound,
  kAlreadyExists,
  kFailedPrecondition,  // the system is not in a state to do this
  kOutOfRange,
  kUnavailable,         // transient: a peer or service is down; retrying may help
  kDeadlineExceeded,    // a timeout expired
  kDataLoss,            // corrupt data: checksum mismatch, truncated file
  kPermissionDenied,
  kUnauthenticated,
  kResourceExhausted,
  kCancelled,
  kAborted,
  kUnimplemented,
  kInternal,            // a bug in Gantry
  kRemoteError,         // a remote peer reported or caused the failure
  kSystemError,         // an OS call failed (errno)
  kDeviceError,         // CUDA / cuBLAS / cuDNN / NCCL failure
};

std::string_view StatusCodeName(StatusCode code);

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status Ok() { return Status(); }
  bool ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }
  // "CODE: message" (or "OK").
  std::string ToString() const;
  // Prepends context: "context: message". Returns *this for chaining.
  Status& Prepend(std::string_view context);
  // Appends "\n  at file:line" (used by the macros below).
  Status& AddLocation(const char* file, int line);
  // Explicitly ignore a status (e.g. best-effort cleanup).
  void IgnoreError() const {}

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

inline Status OkStatus() { return Status(); }
Status InvalidArgumentError(std::string msg);
Status NotFoundError(std::string msg);
Status AlreadyExistsError(std::string msg);
Status FailedPreconditionError(std::string msg);
Status OutOfRangeError(std::string msg);
Status UnavailableError(std::string msg);
Status DeadlineExceededError(std::string msg);
Status DataLossError(std::string msg);
Status PermissionDeniedError(std::string msg);
Status UnauthenticatedError(std::string msg);
Status ResourceExhaustedError(std::string msg);
Status CancelledError(std::string msg);
Status AbortedError(std::string msg);
Status UnimplementedError(std::string msg);
Status InternalError(std::string msg);
Status RemoteError(std::string msg);
// errno converter: "what: strerror(err) (errno N)".
Status ErrnoError(std::string_view what, int err);

template <typename T>
class [[nodiscard]] StatusOr {
 public:
  StatusOr(Status status) : v_(std::move(status)) {}  // NOLINT: implicit by design
  StatusOr(T value) : v_(std::move(value)) {}         // NOLINT
  bool ok() const { return std::holds_alternative<T>(v_); }
  const Status& status() const {
    static const Status kOkStatus;
    return ok() ? kOkStatus : std::get<Status>(v_);
  }
  T& value() & { return std::get<T>(v_); }
  const T& value() const& { return std::get<T>(v_); }
  T&& value() && { return std::get<T>(std::move(v_)); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

 private:
  std::variant<Status, T> v_;
};

}  // namespace gantry

#define GANTRY_STATUS_CONCAT_INNER(a, b) a##b
#define GANTRY_STATUS_CONCAT(a, b) GANTRY_STATUS_CONCAT_INNER(a, b)

// Returns the Status of `expr` from the current function when it is not ok, adding file:line.
#define GANTRY_RETURN_IF_ERROR(expr)                                   \
  do {                                                                 \
    ::gantry::Status gantry_status_ = (expr);                          \
    if (!gantry_status_.ok()) {                                        \
      gantry_status_.AddLocation(__FILE__, __LINE__);                  \
      return gantry_status_;                                           \
    }                                                                  \
  } while (0)

// `lhs = value of expr` or return its error. lhs may be a declaration: `auto x`.
#define GANTRY_ASSIGN_OR_RETURN(lhs, expr) \
  GANTRY_ASSIGN_OR_RETURN_IMPL(GANTRY_STATUS_CONCAT(gantry_sor_, __LINE__), lhs, expr)
#define GANTRY_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                                 \
  if (!tmp.ok()) {                                   \
    ::gantry::Status s_ = tmp.status();              \
    s_.AddLocation(__FILE__, __LINE__);              \
    return s_;                                       \
  }                                                  \
  lhs = std::move(tmp).value()
