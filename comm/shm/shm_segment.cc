// ShmSegment: create/attach/unlink of the POSIX shared-memory segment and its layout math.
#include "comm/shm/shm_segment.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <random>

namespace gantry::comm {

uint64_t PidNamespaceId() {
  struct stat st {};
  return ::stat("/proc/self/ns/pid", &st) == 0 ? static_cast<uint64_t>(st.st_ino) : 0;
}

namespace {

constexpr uint64_t kShmMagic = 0x47414e5452595348ull;  // "GANTRYSH"
constexpr size_t kMetaBytes = 64;
static_assert(sizeof(ShmOpMeta) <= kMetaBytes);

size_t AlignUp(size_t v, size_t a) { return (v + a - 1) / a * a; }

}  // namespace

ShmSegment::ShmSegment(const Layout& layout, size_t bytes) : layout_(layout), bytes_(bytes) {}

size_t ShmSegment::SlotBytes() const {
  return layout_.stages * (kMetaBytes + layout_.stage_bytes + layout_.result_bytes);
}

StatusOr<std::unique_ptr<ShmSegment>> ShmSegment::Create(Bootstrap& bootstrap, const Layout& l,
                                                         std::chrono::milliseconds timeout) {
  const int n = l.ranks;
  std::unique_ptr<ShmSegment> seg(new ShmSegment(l, 0));
  seg->control_off_ = 4096;
  seg->slots_off_ = AlignUp(seg->control_off_ + n * sizeof(ShmRankControl), 4096);
  seg->mailbox_off_ = AlignUp(seg->slots_off_ + n * seg->SlotBytes(), 4096);
  const size_t mailbox_stride = AlignUp(sizeof(ShmMailbox) + l.mailbox_bytes, 4096);
  seg->bytes_ = seg->mailbox_off_ + static_cast<size_t>(n) * n * mailbox_stride;

  auto scope = bootstrap.NewScope("shm");
  std::string name;
  int fd = -1;
  if (bootstrap.rank() == 0) {
    name = "/gantry-" + std::to_string(getpid()) + "-" + std::to_string(std::random_device{}());
    fd = shm_open(name.c_str(), O_CREAT | O_EXCL | O_RDWR, 0600);
    if (fd < 0) return ErrnoError("shm_open(" + name + ")", errno);
    int rc = posix_fallocate(fd, 0, static_cast<off_t>(seg->bytes_));
    if (rc != 0) {
      close(fd);
      shm_unlink(name.c_str());
      return ErrnoError("reserving " + std::to_string(seg->bytes_ >> 20) + " MiB in /dev/shm for " +
                        name + " (is /dev/shm large enough? docker: --shm-size)", rc);
    }
    GANTRY_RETURN_IF_ERROR(scope->Set("name", name));
  } else {
    GANTRY_ASSIGN_OR_RETURN(name, scope->Get("name", timeout));
    fd = shm_open(name.c_str(), O_RDWR, 0600);
    if (fd < 0) {
      return ErrnoError("shm_open(" + name + ") created by rank 0: are all ranks on one host and "
                        "in one IPC namespace?", errno);
    }
  }
  void* p = mmap(nullptr, seg->bytes_, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  int mmap_err = errno;
  close(fd);
  if (p == MAP_FAILED) return ErrnoError("mmap(" + name + ")", mmap_err);
  seg->base_ = static_cast<char*>(p);
  if (bootstrap.rank() == 0) {
    seg->header()->magic = kShmMagic;
    seg->header()->failed_rank.store(-1);
    std::strncpy(seg->header()->name, name.c_str(), sizeof(ShmHeader::name) - 1);
  }
  seg->control(bootstrap.rank())->pidns.store(PidNamespaceId());
  seg->control(bootstrap.rank())->pid.store(getpid());
  // Everyone mapped it: the name can go (the mapping lives until the last munmap).
  GANTRY_RETURN_IF_ERROR(
      bootstrap.AllGather(*scope, "attached", "1", timeout).status());
  if (bootstrap.rank() == 0) shm_unlink(name.c_str());
  if (seg->header()->magic != kShmMagic) {
    return InternalError("shm segment " + name + " has a bad header");
  }
  return seg;
}

ShmSegment::~ShmSegment() {
  if (base_) munmap(base_, bytes_);
}

ShmRankControl* ShmSegment::control(int rank) const {
  return reinterpret_cast<ShmRankControl*>(base_ + control_off_) + rank;
}

ShmOpMeta* ShmSegment::meta(int rank, uint64_t q) const {
  char* slot = base_ + slots_off_ + rank * SlotBytes();
  size_t stage = (q % layout_.stages) * (kMetaBytes + layout_.stage_bytes + layout_.result_bytes);
  return reinterpret_cast<ShmOpMeta*>(slot + stage);
}

char* ShmSegment::input(int rank, uint64_t q) const {
  return reinterpret_cast<char*>(meta(rank, q)) + kMetaBytes;
}

char* ShmSegment::result(int rank, uint64_t q) const {
  return input(rank, q) + layout_.stage_bytes;
}

ShmMailbox* ShmSegment::mailbox(int from, int to) const {
  const size_t stride = AlignUp(sizeof(ShmMailbox) + layout_.mailbox_bytes, 4096);
  return reinterpret_cast<ShmMailbox*>(base_ + mailbox_off_ +
                                       (static_cast<size_t>(from) * layout_.ranks + to) * stride);
}

char* ShmSegment::mailbox_data(int from, int to) const {
  return reinterpret_cast<char*>(mailbox(from, to)) + sizeof(ShmMailbox);
}

}  // namespace gantry::comm
