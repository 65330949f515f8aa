// ShmWindows: create, agree on, map and unlink the per-rank objects of a symmetric window.
#include "comm/shm/shm_window.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>

#include "base/logging.h"
#include "comm/shm/shm_algorithms.h"

// Linux 5.14; older headers (glibc < 2.35) lack the name. An old kernel answers EINVAL, which
// falls back to posix_fallocate below.
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

namespace gantry::comm {
namespace {

std::string ObjectName(const ShmGroup& g, size_t window, int rank) {
  return g.segment().name() + "-w" + std::to_string(window) + "-r" + std::to_string(rank);
}

constexpr size_t kHugePage = size_t{2} << 20;

// Maps `bytes` of `fd` at a 2 MiB-aligned address (so the kernel may map whole huge pages)
// and asks for transparent huge pages. They come only where the host allows THP for
// /dev/shm: the tmpfs mounted with huge=advise, within_size or always, or shmem_enabled=force
// (shmem_enabled=advise alone does not reach a tmpfs mount; most hosts allow none). There
// the data-parallel gradient windows stop paying 4 KiB TLB misses (mlp-mnist, 2 ranks: step
// overhead over independent trainers 5.5% -> 2-4.5% with huge=advise; comm/shm/README.md).
StatusOr<char*> MapAligned(int fd, size_t bytes, const std::string& name) {
  const size_t span = bytes >= kHugePage ? bytes + kHugePage : bytes;
  void* area = mmap(nullptr, span, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (area == MAP_FAILED) return ErrnoError("reserving address space for " + name, errno);
  const uintptr_t lo = reinterpret_cast<uintptr_t>(area);
  const uintptr_t at = bytes >= kHugePage ? (lo + kHugePage - 1) / kHugePage * kHugePage : lo;
  void* p = mmap(reinterpret_cast<void*>(at), bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED,
                 fd, 0);
  if (p == MAP_FAILED) {
    const int err = errno;
    munmap(area, span);
    return ErrnoError("mmap(" + name + ")", err);
  }
  if (at > lo) munmap(area, at - lo);  // the reservation around the mapping
  if (lo + span > at + bytes) munmap(reinterpret_cast<void*>(at + bytes), lo + span - at - bytes);
  if (bytes >= kHugePage) (void)madvise(p, bytes, MADV_HUGEPAGE);
  return static_cast<char*>(p);
}

// Maps an existing object of exactly `bytes`; `created` objects are sized and populated first
// (so a /dev/shm too small for them fails here, not with SIGBUS mid-collective).
StatusOr<char*> MapObject(const std::string& name, size_t bytes, bool create) {
  const int fd = create ? shm_open(name.c_str(), O_CREAT | O_EXCL | O_RDWR, 0600)
                        : shm_open(name.c_str(), O_RDWR, 0600);
  if (fd < 0) return ErrnoError("shm_open(" + name + ")", errno);
  auto no_room = [&](int err) {
    return ErrnoError("reserving " + std::to_string(bytes >> 10) + " KiB in /dev/shm for " + name +
                          " (docker: --shm-size)",
                      err);
  };
  if (create) {
    if (ftruncate(fd, static_cast<off_t>(bytes)) != 0) {
      const int err = errno;
      close(fd);
      return no_room(err);
    }
  } else {
    struct stat st {};
    if (fstat(fd, &st) != 0 || static_cast<size_t>(st.st_size) != bytes) {
      close(fd);
      return InternalError("symmetric window " + name + " has " + std::to_string(st.st_size) +
                           " bytes, expected " + std::to_string(bytes));
    }
  }
  StatusOr<char*> p = MapAligned(fd, bytes, name);
  if (p.ok() && create) {
    // Allocate every page now, through the mapping so the huge-page advice applies (a
    // posix_fallocate would allocate 4 KiB pages before any mapping exists). Kernels before
    // 5.14 lack MADV_POPULATE_WRITE: reserve with posix_fallocate instead.
    int err = madvise(*p, bytes, MADV_POPULATE_WRITE) == 0 ? 0 : errno;
    if (err == EINVAL) err = posix_fallocate(fd, 0, static_cast<off_t>(bytes));
    if (err != 0) {
      munmap(*p, bytes);
      close(fd);
      return no_room(err);
    }
  }
  close(fd);
  return p;
}

}  // namespace

ShmWindows::~ShmWindows() {
  for (const Window& w : windows_) {
    for (size_t r = 0; r < w.bases.size(); ++r) {
      if (w.bases[r] != nullptr && w.bases[r] != w.own.get()) munmap(w.bases[r], w.bytes);
    }
  }
}

StatusOr<std::shared_ptr<void>> ShmWindows::Allocate(ShmGroup& g, const ShmGroup::Op& op,
                                                     size_t bytes) {
  std::lock_guard<std::mutex> lock(mu_);
  const size_t k = windows_.size();
  Window w;
  // Windows of 2 MiB and more are whole huge pages (MapAligned).
  const size_t unit = bytes >= kHugePage ? kHugePage : 4096;
  w.bytes = std::max<size_t>(4096, (bytes + unit - 1) / unit * unit);
  w.bases.assign(g.size(), nullptr);
  const std::string mine = ObjectName(g, k, g.rank());
  auto own = MapObject(mine, w.bytes, /*create=*/true);
  if (own.ok()) {
    const size_t len = w.bytes;
    w.own = std::shared_ptr<void>(*own, [len](void* p) { munmap(p, len); });
    w.bases[g.rank()] = *own;
  } else {
    shm_unlink(mine.c_str());
    GANTRY_LOG(WARNING, "symmetric window unavailable; collectives use staging copies")
        .Field("error", own.status().ToString());
  }
  // Every rank must take the same path: min over ranks of "created mine".
  int32_t all_ok = own.ok() ? 1 : 0;
  GANTRY_RETURN_IF_ERROR(ShmAllreduce(g, op, &all_ok, &all_ok, 1, DataType::kI32, ReduceOp::kMin));
  if (!all_ok) {
    if (own.ok()) shm_unlink(mine.c_str());
    w.own.reset();  // unmapped: its pages go back to /dev/shm
    // Return together: a rank that tried again at once (a smaller window) found /dev/shm
    // still holding the parts the other ranks had not released yet, and failed too.
    GANTRY_RETURN_IF_ERROR(ShmBarrier(g, op));
    return std::shared_ptr<void>();
  }
  Status mapped = OkStatus();
  for (int r = 0; r < g.size() && mapped.ok(); ++r) {
    if (r == g.rank()) continue;
    auto peer = MapObject(ObjectName(g, k, r), w.bytes, /*create=*/false);
    if (peer.ok()) w.bases[r] = *peer;
    else mapped = peer.status();
  }
  // Unlink only once every rank mapped every object (barrier), so no open can miss.
  Status barrier = mapped.ok() ? ShmBarrier(g, op) : mapped;
  shm_unlink(mine.c_str());
  if (!barrier.ok()) {
    for (int r = 0; r < g.size(); ++r) {
      if (r != g.rank() && w.bases[r] != nullptr) munmap(w.bases[r], w.bytes);
    }
    return barrier;
  }
  windows_.push_back(std::move(w));
  return windows_.back().own;
}

std::optional<ShmWindows::Where> ShmWindows::Find(const void* p, size_t bytes) const {
  std::lock_guard<std::mutex> lock(mu_);
  const char* c = static_cast<const char*>(p);
  for (size_t k = 0; k < windows_.size(); ++k) {
    const Window& w = windows_[k];
    const char* b = static_cast<const char*>(w.own.get());
    if (c >= b && c + bytes <= b + w.bytes) return Where{int(k), size_t(c - b)};
  }
  return std::nullopt;
}

}  // namespace gantry::comm
