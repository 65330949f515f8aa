// Status: names, formatting and the error constructors.
#include "base/status.h"

#include <cstring>

namespace gantry {

std::string_view StatusCodeName(StatusCode code) {
  switch (code) {
    case StatusCode::kOk: return "OK";
    case StatusCode::kInvalidArgument: return "INVALID_ARGUMENT";
    case StatusCode::kNotFound: return "NOT_FOUND";
    case StatusCode::kAlreadyExists: return "ALREADY_EXISTS";
    case StatusCode::kFailedPrecondition: return "FAILED_PRECONDITION";
    case StatusCode::kOutOfRange: return "OUT_OF_RANGE";
    case StatusCode::kUnavailable: return "UNAVAILABLE";
    case StatusCode::kDeadlineExceeded: return "DEADLINE_EXCEEDED";
    case StatusCode::kDataLoss: return "DATA_LOSS";
    case StatusCode::kPermissionDenied: return "PERMISSION_DENIED";
    case StatusCode::kUnauthenticated: return "UNAUTHENTICATED";
    case StatusCode::kResourceExhausted: return "RESOURCE_EXHAUSTED";
    case StatusCode::kCancelled: return "CANCELLED";
    case StatusCode::kAborted: return "ABORTED";
    case StatusCode::kUnimplemented: return "UNIMPLEMENTED";
    case StatusCode::kInternal: return "INTERNAL";
    case StatusCode::kRemoteError: return "REMOTE_ERROR";
    case StatusCode::kSystemError: return "SYSTEM_ERROR";
    case StatusCode::kDeviceError: return "DEVICE_ERROR";
  }
  return "UNKNOWN";
}

std::string Status::ToString() const {
  if (ok()) return "OK";
  std::string out(StatusCodeName(code_));
  out += ": ";
  out += message_;
  return out;
}

Status& Status::Prepend(std::string_view context) {
  if (!ok()) message_ = std::string(context) + ": " + message_;
  return *this;
}

Status& Status::AddLocation(const char* file, int line) {
  if (!ok()) {
    message_ += "\n  at ";
    message_ += file;
    message_ += ':';
    message_ += std::to_string(line);
  }
  return *this;
}

#define GANTRY_DEFINE_ERROR(Name, Code) \
  Status Name(std::string msg) { return Status(StatusCode::Code, std::move(msg)); }
GANTRY_DEFINE_ERROR(InvalidArgumentError, kInvalidArgument)
GANTRY_DEFINE_ERROR(NotFoundError, kNotFound)
GANTRY_DEFINE_ERROR(AlreadyExistsError, kAlreadyExists)
GANTRY_DEFINE_ERROR(FailedPreconditionError, kFailedPrecondition)
GANTRY_DEFINE_ERROR(OutOfRangeError, kOutOfRange)
GANTRY_DEFINE_ERROR(UnavailableError, kUnavailable)
GANTRY_DEFINE_ERROR(DeadlineExceededError, kDeadlineExceeded)
GANTRY_DEFINE_ERROR(DataLossError, kDataLoss)
GANTRY_DEFINE_ERROR(PermissionDeniedError, kPermissionDenied)
GANTRY_DEFINE_ERROR(UnauthenticatedError, kUnauthenticated)
GANTRY_DEFINE_ERROR(ResourceExhaustedError, kResourceExhausted)
GANTRY_DEFINE_ERROR(CancelledError, kCancelled)
GANTRY_DEFINE_ERROR(AbortedError, kAborted)
GANTRY_DEFINE_ERROR(UnimplementedError, kUnimplemented)
GANTRY_DEFINE_ERROR(InternalError, kInternal)
GANTRY_DEFINE_ERROR(RemoteError, kRemoteError)
#undef GANTRY_DEFINE_ERROR

Status ErrnoError(std::string_view what, int err) {
  return Status(StatusCode::kSystemError, std::string(what) + ": " + std::strerror(err) +
                                              " (errno " + std::to_string(err) + ")");
}

}  // namespace gantry
