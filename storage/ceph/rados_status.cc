// librados errno -> Status (the one converter for librados), transient-error policy, backoff.
#include <cerrno>
#include <cstring>
#include <thread>

#include "storage/ceph/rados_object_store.h"

namespace gantry::storage {

bool IsTransientRadosError(int err) {
  switch (err) {
    case ETIMEDOUT: case EAGAIN: case EBUSY: case ENOTCONN: case ESHUTDOWN:
    case ECONNREFUSED: case ECONNRESET: case EINTR:
      return true;
    default:
      return false;
  }
}

void RadosBackoff(int attempt) {
  int ms = std::min(2000, 100 << std::min(attempt, 5));
  std::this_thread::sleep_for(std::chrono::milliseconds(ms));
}

Status RadosObjectStore::Error(int err, std::string_view op, std::string_view key) const {
  if (err < 0) err = -err;
  std::string what = "ceph pool '" + pool_ + "' key '" + prefix_ + std::string(key) + "': " +
                     std::string(op) + " failed: " + std::strerror(err) + " (errno " +
                     std::to_string(err) + ")";
  switch (err) {
    case ENOENT:
      return NotFoundError(what + "; the object does not exist");
    case EACCES: case EPERM:
      return PermissionDeniedError(what + "; client." + options_.id +
                                   " lacks caps on this pool (needs osd 'allow rwx pool=" +
                                   pool_ + "')");
    case ETIMEDOUT:
      return DeadlineExceededError(what + " after " + std::to_string(options_.retries + 1) +
                                   " attempts of " + std::to_string(options_.timeout_s) +
                                   " s; is the OSD up? (raise timeout_s= in the URI if slow)");
    case ENOSPC: case EDQUOT:
      return ResourceExhaustedError(what + "; the pool or OSD is full");
    case E2BIG: case EFBIG:
      return InvalidArgumentError(what + "; object too large for the OSD, lower stripe_bytes=");
    case ECANCELED:
      return AbortedError(what + "; the compare step did not match");
    case EINVAL:
      return InvalidArgumentError(what);
    default:
      if (IsTransientRadosError(err)) return UnavailableError(what + "; retries exhausted");
      return Status(StatusCode::kSystemError, what);
  }
}

}  // namespace gantry::storage
