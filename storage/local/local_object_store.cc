// LocalObjectStore: POSIX files, atomic rename, flock for compare-and-put.
#include "storage/local/local_object_store.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <filesystem>
#include <system_error>

namespace gantry::storage {
namespace fs = std::filesystem;
namespace {

constexpr std::string_view kTempPrefix = ".gantry-tmp.";
constexpr std::string_view kLockPrefix = ".gantry-lock.";

// Closes a file descriptor on scope exit.
class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  int release() { return std::exchange(fd_, -1); }

 private:
  int fd_;
};

Status WriteAll(int fd, std::span<const std::byte> data, const std::string& path) {
  size_t done = 0;
  while (done < data.size()) {
    ssize_t n = ::write(fd, data.data() + done, std::min<size_t>(data.size() - done, 1 << 30));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return ErrnoError("write " + path + " (disk full? check free space)", errno);
    done += static_cast<size_t>(n);
  }
  return OkStatus();
}

Status FsyncDir(const std::string& dir) {
  Fd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (fd.get() < 0) return ErrnoError("open directory " + dir, errno);
  if (::fsync(fd.get()) != 0) return ErrnoError("fsync directory " + dir, errno);
  return OkStatus();
}

Status MakeDirs(const std::string& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return ErrnoError("create directory " + dir, ec.value());
  return OkStatus();
}

// Writes `data` to `path` atomically: temp file in the same directory, fsync, rename.
Status AtomicWrite(const std::string& path, std::span<const std::byte> data) {
  static std::atomic<uint64_t> counter{0};
  fs::path p(path);
  std::string dir = p.parent_path().string();
  GANTRY_RETURN_IF_ERROR(MakeDirs(dir));
  std::string tmp = dir + "/" + std::string(kTempPrefix) + p.filename().string() + "." +
                    std::to_string(::getpid()) + "." + std::to_string(counter++);
  Fd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  if (fd.get() < 0) return ErrnoError("create " + tmp, errno);
  Status st = WriteAll(fd.get(), data, tmp);
  if (st.ok() && ::fsync(fd.get()) != 0) st = ErrnoError("fsync " + tmp, errno);
  if (st.ok() && ::close(fd.release()) != 0) st = ErrnoError("close " + tmp, errno);
  if (st.ok() && ::rename(tmp.c_str(), path.c_str()) != 0) {
    st = ErrnoError("rename " + tmp + " -> " + path, errno);
  }
  if (!st.ok()) {
    ::unlink(tmp.c_str());
    return st;
  }
  return FsyncDir(dir);
}

}  // namespace

StatusOr<std::unique_ptr<LocalObjectStore>> LocalObjectStore::Open(const std::string& root) {
  if (root.empty() || root.front() != '/') {
    return InvalidArgumentError("local store root '" + root + "' must be an absolute path");
  }
  GANTRY_RETURN_IF_ERROR(MakeDirs(root).Prepend("open local store"));
  if (::access(root.c_str(), R_OK | W_OK | X_OK) != 0) {
    return ErrnoError("local store root " + root + " is not readable and writable", errno);
  }
  return std::unique_ptr<LocalObjectStore>(new LocalObjectStore(root));
}

Status LocalObjectStore::NotFound(std::string_view key) const {
  return NotFoundError(Describe() + ": object '" + std::string(key) + "' does not exist");
}

StatusOr<int> LocalObjectStore::OpenForRead(std::string_view key) {
  GANTRY_RETURN_IF_ERROR(ValidateKey(key));
  std::string path = PathOf(key);
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT || errno == ENOTDIR || errno == EISDIR) return NotFound(key);
    return ErrnoError("open " + path, errno);
  }
  return fd;
}

StatusOr<uint64_t> LocalObjectStore::ReadAt(std::string_view key, uint64_t offset,
                                            std::span<std::byte> dst) {
  GANTRY_ASSIGN_OR_RETURN(int raw_fd, OpenForRead(key));
  Fd fd(raw_fd);
  return PreadAll(fd.get(), offset, dst, PathOf(key));
}

StatusOr<std::string> LocalObjectStore::GetAll(std::string_view key) {
  GANTRY_ASSIGN_OR_RETURN(int raw_fd, OpenForRead(key));
  Fd fd(raw_fd);  // size and bytes come from this one open file: one version
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) return ErrnoError("stat " + PathOf(key), errno);
  if (!S_ISREG(st.st_mode)) return NotFound(key);
  std::string out(static_cast<size_t>(st.st_size), '\0');
  GANTRY_ASSIGN_OR_RETURN(uint64_t got, PreadAll(fd.get(), 0, std::as_writable_bytes(std::span<char>(out)), PathOf(key)));
  out.resize(got);
  return out;
}

StatusOr<uint64_t> LocalObjectStore::PreadAll(int fd, uint64_t offset, std::span<std::byte> dst,
                                              const std::string& path) {
  uint64_t done = 0;
  while (done < dst.size()) {
    ssize_t n = ::pread(fd, dst.data() + done, std::min<uint64_t>(dst.size() - done, 1 << 30),
                        static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return ErrnoError("read " + path + " at offset " + std::to_string(offset + done), errno);
    if (n == 0) break;
    done += static_cast<uint64_t>(n);
  }
  return done;
}

std::unique_ptr<PendingRead> LocalObjectStore::GetAsync(std::string_view key, uint64_t offset,
                                                        std::span<std::byte> dst) {
  return std::make_unique<DoneRead>(ReadAt(key, offset, dst));
}

StatusOr<uint64_t> LocalObjectStore::Size(std::string_view key) {
  GANTRY_RETURN_IF_ERROR(ValidateKey(key));
  struct stat st;
  std::string path = PathOf(key);
  if (::stat(path.c_str(), &st) != 0) {
    if (errno == ENOENT || errno == ENOTDIR) return NotFound(key);
    return ErrnoError("stat " + path, errno);
  }
  if (!S_ISREG(st.st_mode)) return NotFound(key);  // a directory is a prefix, not an object
  return static_cast<uint64_t>(st.st_size);
}

Status LocalObjectStore::Put(std::string_view key, std::span<const std::byte> data) {
  GANTRY_RETURN_IF_ERROR(ValidateKey(key));
  return AtomicWrite(PathOf(key), data).Prepend(Describe() + ": put '" + std::string(key) + "'");
}

StatusOr<std::vector<std::string>> LocalObjectStore::List(std::string_view prefix) {
  // Walk only the deepest directory the prefix pins down.
  std::string dir_part(prefix.substr(0, prefix.rfind('/') == std::string_view::npos
                                            ? 0
                                            : prefix.rfind('/')));
  std::string start = dir_part.empty() ? root_ : PathOf(dir_part);
  std::vector<std::string> keys;
  std::error_code ec;
  if (!fs::is_directory(start, ec)) return keys;
  fs::recursive_directory_iterator it(start, ec), end;
  if (ec) return ErrnoError("list " + start, ec.value());
  for (; it != end; it.increment(ec)) {
    if (ec) return ErrnoError("list " + start, ec.value());
    std::string name = it->path().filename().string();
    if (name.starts_with(".gantry")) {
      if (it->is_directory(ec)) it.disable_recursion_pending();
      continue;
    }
    if (!it->is_regular_file(ec)) continue;
    std::string key = it->path().string().substr(root_.size() + 1);
    if (key.starts_with(prefix)) keys.push_back(std::move(key));
  }
  std::sort(keys.begin(), keys.end());
  return keys;
}

Status LocalObjectStore::Remove(std::string_view key) {
  GANTRY_RETURN_IF_ERROR(ValidateKey(key));
  std::string path = PathOf(key);
  if (::unlink(path.c_str()) != 0) {
    if (errno == ENOENT || errno == ENOTDIR) return NotFound(key);
    return ErrnoError("remove " + path, errno);
  }
  // Best effort: drop directories the removal emptied (never the root itself).
  fs::path dir = fs::path(path).parent_path();
  while (dir.string().size() > root_.size() && ::rmdir(dir.c_str()) == 0) dir = dir.parent_path();
  return OkStatus();
}

Status LocalObjectStore::CompareAndPut(std::string_view key,
                                       std::optional<std::string_view> expected,
                                       std::span<const std::byte> data) {
  GANTRY_RETURN_IF_ERROR(ValidateKey(key));
  fs::path p(PathOf(key));
  GANTRY_RETURN_IF_ERROR(MakeDirs(p.parent_path().string()));
  std::string lock_path = p.parent_path().string() + "/" + std::string(kLockPrefix) +
                          p.filename().string();
  Fd lock(::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644));
  if (lock.get() < 0) return ErrnoError("open lock file " + lock_path, errno);
  while (::flock(lock.get(), LOCK_EX) != 0) {
    if (errno != EINTR) return ErrnoError("flock " + lock_path, errno);
  }
  auto current = GetAll(key);  // the lock is released when `lock` closes
  if (!current.ok() && current.status().code() != StatusCode::kNotFound) return current.status();
  bool matches = expected.has_value() ? (current.ok() && *current == *expected) : !current.ok();
  if (!matches) {
    return AbortedError(Describe() + ": compare-and-put of '" + std::string(key) +
                        "' lost: its content changed (another writer?); re-read and retry");
  }
  return AtomicWrite(p.string(), data).Prepend(Describe() + ": compare-and-put '" +
                                               std::string(key) + "'");
}

}  // namespace gantry::storage
