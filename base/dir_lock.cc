// LockDirectory: flock on a lock file that names its holder.
#include "base/dir_lock.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>

namespace gantry {

StatusOr<int> LockDirectory(const std::string& dir, const std::string& name,
                            const std::string& what, const std::string& holder) {
  const std::string path = dir + "/" + name;
  const int fd = open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return ErrnoError("opening " + path, errno);
  if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    char buf[32] = {0};
    const ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);
    std::string pid = n > 0 ? std::string(buf, size_t(n)) : std::string("?");
    while (!pid.empty() && (pid.back() == '\n' || pid.back() == ' ')) pid.pop_back();
    close(fd);
    if (err == EWOULDBLOCK) {
      return FailedPreconditionError(what + " " + dir + " is in use by another " + holder +
                                     " (pid " + pid + "); stop it first, or use another --dir");
    }
    return ErrnoError("locking " + path, err);
  }
  // The lock holds without the pid; only a second process's message would lack it.
  const std::string pid = std::to_string(getpid()) + "\n";
  if (ftruncate(fd, 0) == 0) (void)!pwrite(fd, pid.data(), pid.size(), 0);
  return fd;
}

}  // namespace gantry
