// ShmGroup: stage counters, the bounded wait with liveness checks, mailboxes and poisoning.
#include "comm/shm/shm_group.h"

#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <thread>

#if defined(__x86_64__)
#include <immintrin.h>
#define GANTRY_PAUSE() _mm_pause()
#else
#define GANTRY_PAUSE() std::atomic_signal_fence(std::memory_order_seq_cst)
#endif

namespace gantry::comm {
namespace {

// Spin this long before yielding, and yield this long before napping: short enough that a
// waiting progress thread does not starve a training thread on the same core.
constexpr auto kSpinTime = std::chrono::microseconds(30);
constexpr auto kYieldTime = std::chrono::microseconds(500);
constexpr auto kNap = std::chrono::microseconds(50);
constexpr auto kLivenessPeriod = std::chrono::milliseconds(20);

// "sum" for a reduce op value, "root 3" for a broadcast root: what a collective's label shows.
std::string Detail(uint8_t kind, uint8_t op, int32_t root) {
  switch (kind) {
    case kShmAllreduce:
    case kShmReduceScatter:
    case kShmAllreduceWindow: return std::string(ReduceOpName(static_cast<ReduceOp>(op)));
    case kShmBroadcast: return "root " + std::to_string(root);
    default: return "";
  }
}

// Appends "<what> <theirs> there, <mine> here" ("op avg there, sum here") when they differ.
void AddDifference(std::string& out, const std::string& what, const std::string& theirs,
                   const std::string& mine) {
  if (theirs == mine) return;
  if (!out.empty()) out += ", ";
  out += what + " " + theirs + " there, " + mine + " here";
}

// The reduce op or the root, whichever `kind` has ("op avg there, sum here"); T is ShmOpMeta
// or ShmStepOf.
template <typename T>
void AddOpAndRoot(std::string& out, const std::string& suffix, uint8_t kind, const T& theirs,
                  const T& mine) {
  if (kind == kShmBroadcast) {
    AddDifference(out, "root" + suffix, std::to_string(theirs.root), std::to_string(mine.root));
  } else if (!Detail(kind, 0, 0).empty()) {
    AddDifference(out, "op" + suffix, Detail(kind, theirs.op, 0), Detail(kind, mine.op, 0));
  }
}

}  // namespace

std::string ShmKindName(uint8_t kind) {
  switch (kind) {
    case kShmAllreduce: return "allreduce";
    case kShmBroadcast: return "broadcast";
    case kShmAllgather: return "allgather";
    case kShmReduceScatter: return "reduce_scatter";
    case kShmBarrier: return "barrier";
    case kShmWindowAllocate: return "allocate_symmetric";
    case kShmAllreduceWindow: return "allreduce on symmetric memory";
    default: return "collective " + std::to_string(kind);
  }
}

std::string DescribeShmOp(const ShmOpMeta& m) {
  if (m.kind == kShmNone) return "no collective at this stage";
  std::string s = ShmKindName(m.kind) + " #" + std::to_string(m.seq) + " (" +
                  std::string(DataTypeName(static_cast<DataType>(m.dtype))) + " x " +
                  std::to_string(m.count);
  const std::string detail = Detail(m.kind, m.op, m.root);
  if (!detail.empty()) s += ", " + detail;
  s += ")";
  if (m.window >= 0) {
    s += " on symmetric window " + std::to_string(m.window) + " at byte " +
         std::to_string(m.offset);
  }
  if (m.step_of.kind != kShmNone) {
    const std::string of = Detail(m.step_of.kind, m.step_of.op, m.step_of.root);
    s += " as a step of " + ShmKindName(m.step_of.kind) + (of.empty() ? "" : " (" + of + ")");
  }
  return s;
}

std::string ShmOpDifferences(const ShmOpMeta& theirs, const ShmOpMeta& mine) {
  if (theirs.kind == kShmNone) return "it is past this stage: it called other collectives";
  std::string d;
  AddDifference(d, "collective", ShmKindName(theirs.kind), ShmKindName(mine.kind));
  AddDifference(d, "sequence number", std::to_string(theirs.seq), std::to_string(mine.seq));
  AddDifference(d, "count", std::to_string(theirs.count), std::to_string(mine.count));
  AddDifference(d, "dtype", std::string(DataTypeName(static_cast<DataType>(theirs.dtype))),
                std::string(DataTypeName(static_cast<DataType>(mine.dtype))));
  if (theirs.kind == mine.kind) AddOpAndRoot(d, "", theirs.kind, theirs, mine);
  AddDifference(d, "symmetric window",
                std::to_string(theirs.window) + " at byte " + std::to_string(theirs.offset),
                std::to_string(mine.window) + " at byte " + std::to_string(mine.offset));
  const ShmStepOf& t = theirs.step_of;
  const ShmStepOf& m = mine.step_of;
  AddDifference(d, "step of", ShmKindName(t.kind), ShmKindName(m.kind));
  if (t.kind == m.kind) AddOpAndRoot(d, " of the whole " + ShmKindName(t.kind), t.kind, t, m);
  return d.empty() ? "same arguments, posted for another operation" : d;
}

ShmGroup::ShmGroup(std::unique_ptr<ShmSegment> segment, int rank)
    : segment_(std::move(segment)), rank_(rank), size_(segment_->layout().ranks),
      pidfds_(size_, -1), pid_watch_(size_, true) {
  const uint64_t own_ns = PidNamespaceId();
  for (int j = 0; j < size_; ++j) {
    if (j == rank_) continue;
    // A peer in another PID namespace: its pid names some other process here (or none, which
    // would read as "exited" at once). It is then not watched by pid; a death is seen through
    // the poisoned segment or the operation's timeout.
    const uint64_t ns = segment_->control(j)->pidns.load();
    if (ns != 0 && own_ns != 0 && ns != own_ns) {
      pid_watch_[j] = false;
      continue;
    }
#ifdef SYS_pidfd_open
    pidfds_[j] = static_cast<int>(syscall(SYS_pidfd_open, segment_->control(j)->pid.load(), 0));
#endif
  }
}

ShmGroup::~ShmGroup() {
  for (int fd : pidfds_) {
    if (fd >= 0) close(fd);
  }
}

std::string ShmGroup::RankName(int r) const {
  const bool named = r >= 0 && static_cast<size_t>(r) < names_.size();
  return "rank " + std::to_string(named ? names_[r] : r);
}

Status ShmGroup::CheckPeer(const Op& op, int peer) {
  ShmHeader* h = segment_->header();
  int failed = h->failed_rank.load(std::memory_order_acquire);
  if (failed >= 0) {
    std::string msg = op.label + ": " + RankName(failed) + " failed and broke the group: " +
                      std::string(h->failure) + " (waited " + SecondsSince(op.start) + ")";
    // A mismatch another rank saw is a mismatch here too: every rank reports the same kind of
    // error whichever of them compared the descriptors.
    if (h->failure_cause == static_cast<int32_t>(StatusCode::kFailedPrecondition)) {
      return FailedPreconditionError(std::move(msg));
    }
    return UnavailableError(std::move(msg));
  }
  if (aborted_.load()) return AbortedError(op.label + ": communicator aborted");
  if (peer < 0 || peer == rank_ || !pid_watch_[peer]) return OkStatus();
  const int pid = segment_->control(peer)->pid.load();
  bool dead = false;
  if (pidfds_[peer] >= 0) {
    pollfd p{pidfds_[peer], POLLIN, 0};
    dead = ::poll(&p, 1, 0) > 0;
  } else {
    dead = kill(pid, 0) != 0 && errno == ESRCH;
  }
  if (dead) {
    return UnavailableError(op.label + ": peer " + RankName(peer) + " (pid " +
                            std::to_string(pid) + ") exited while this rank waited for it " +
                            SecondsSince(op.start) +
                            "; it was killed or crashed: check its log");
  }
  return OkStatus();
}

Status ShmGroup::WaitFor(const Op& op, int peer, const std::atomic<uint64_t>& counter,
                         uint64_t target, const char* what) {
  if (counter.load(std::memory_order_acquire) >= target) return OkStatus();
  const auto begin = Clock::now();
  auto last_check = begin;
  for (;;) {
    for (int i = 0; i < 64; ++i) {
      if (counter.load(std::memory_order_acquire) >= target) return OkStatus();
      GANTRY_PAUSE();
    }
    const auto now = Clock::now();
    if (now - last_check >= kLivenessPeriod) {
      last_check = now;
      GANTRY_RETURN_IF_ERROR(CheckPeer(op, peer));
      if (now >= op.deadline) {
        return DeadlineExceededError(op.label + ": timed out after " + SecondsSince(op.start) +
                                     " waiting for peer " + RankName(peer) + " to " +
                                     what + "; that rank is stuck or slow: check it, or raise "
                                     "comm timeout_s");
      }
    }
    if (now - begin < kSpinTime) continue;
    if (now - begin < kYieldTime) {
      sched_yield();
    } else {
      std::this_thread::sleep_for(kNap);
    }
  }
}

Status ShmGroup::Acquire(const Op& op, uint64_t q) {
  const uint64_t stages = segment_->layout().stages;
  if (q < stages) return OkStatus();
  for (int j = 0; j < size_; ++j) {
    GANTRY_RETURN_IF_ERROR(
        WaitFor(op, j, segment_->control(j)->done.value, q - stages + 1, "release a stage"));
  }
  return OkStatus();
}

void ShmGroup::Post(const Op& op, uint64_t q) {
  *segment_->meta(rank_, q) = op.meta;
  segment_->control(rank_)->posted.value.store(q + 1, std::memory_order_release);
}

Status ShmGroup::WaitPosted(const Op& op, int peer, uint64_t q) {
  GANTRY_RETURN_IF_ERROR(WaitFor(op, peer, segment_->control(peer)->posted.value, q + 1, "post data"));
  const ShmOpMeta& m = *segment_->meta(peer, q);
  if (!(m == op.meta)) {
    return FailedPreconditionError(
        op.label + ": " + RankName(peer) + " issued " + DescribeShmOp(m) + " (" +
        ShmOpDifferences(m, op.meta) +
        "); every rank must call the same collectives in the same order with the same arguments");
  }
  return OkStatus();
}

Status ShmGroup::WaitAllPosted(const Op& op, uint64_t q) {
  for (int j = 0; j < size_; ++j) {
    if (j != rank_) GANTRY_RETURN_IF_ERROR(WaitPosted(op, j, q));
  }
  return OkStatus();
}

void ShmGroup::MarkReduced(uint64_t q) {
  segment_->control(rank_)->reduced.value.store(q + 1, std::memory_order_release);
}

Status ShmGroup::WaitReduced(const Op& op, int peer, uint64_t q) {
  return WaitFor(op, peer, segment_->control(peer)->reduced.value, q + 1, "publish its result");
}

void ShmGroup::MarkDone(uint64_t q) {
  segment_->control(rank_)->done.value.store(q + 1, std::memory_order_release);
}

Status ShmGroup::WaitDone(const Op& op, int peer, uint64_t q) {
  return WaitFor(op, peer, segment_->control(peer)->done.value, q + 1, "finish reading");
}

void ShmGroup::Signal(int slot, uint64_t value) {
  segment_->control(rank_)->signal[slot].value.store(value, std::memory_order_release);
}

uint64_t ShmGroup::PeekSignal(int peer, int slot) const {
  return segment_->control(peer)->signal[slot].value.load(std::memory_order_acquire);
}

Status ShmGroup::WaitSignal(const Op& op, int peer, int slot, uint64_t value, const char* what) {
  return WaitFor(op, peer, segment_->control(peer)->signal[slot].value, value, what);
}

Status ShmGroup::MailboxWrite(const Op& op, int to, const void* data, size_t bytes) {
  ShmMailbox* mb = segment_->mailbox(rank_, to);
  char* ring = segment_->mailbox_data(rank_, to);
  const size_t cap = segment_->layout().mailbox_bytes;
  const char* p = static_cast<const char*>(data);
  uint64_t head = mb->head.value.load(std::memory_order_relaxed);
  while (bytes > 0) {
    if (head - mb->tail.value.load(std::memory_order_acquire) >= cap) {
      GANTRY_RETURN_IF_ERROR(WaitFor(op, to, mb->tail.value, head - cap + 1, "read its mailbox"));
    }
    const size_t space = cap - (head - mb->tail.value.load(std::memory_order_acquire));
    const size_t pos = head % cap;
    const size_t n = std::min<size_t>({bytes, space, cap - pos});
    std::memcpy(ring + pos, p, n);
    head += n;
    p += n;
    bytes -= n;
    mb->head.value.store(head, std::memory_order_release);
  }
  return OkStatus();
}

Status ShmGroup::MailboxRead(const Op& op, int from, void* data, size_t bytes) {
  ShmMailbox* mb = segment_->mailbox(from, rank_);
  const char* ring = segment_->mailbox_data(from, rank_);
  const size_t cap = segment_->layout().mailbox_bytes;
  char* p = static_cast<char*>(data);
  uint64_t tail = mb->tail.value.load(std::memory_order_relaxed);
  while (bytes > 0) {
    GANTRY_RETURN_IF_ERROR(WaitFor(op, from, mb->head.value, tail + 1, "send"));
    const size_t avail = mb->head.value.load(std::memory_order_acquire) - tail;
    const size_t pos = tail % cap;
    const size_t n = std::min<size_t>({bytes, avail, cap - pos});
    std::memcpy(p, ring + pos, n);
    tail += n;
    p += n;
    bytes -= n;
    mb->tail.value.store(tail, std::memory_order_release);
  }
  return OkStatus();
}

void ShmGroup::Poison(const Status& reason, StatusCode cause) {
  ShmHeader* h = segment_->header();
  int expected = -1;
  // Claim the failure slot first so two failing ranks do not interleave their messages.
  static constexpr int kWriting = -2;
  if (!h->failed_rank.compare_exchange_strong(expected, kWriting)) return;
  std::string msg = reason.ToString();
  std::strncpy(h->failure, msg.c_str(), sizeof(h->failure) - 1);
  h->failure[sizeof(h->failure) - 1] = '\0';
  h->failure_cause = static_cast<int32_t>(cause);
  h->failed_rank.store(rank_, std::memory_order_release);
}

}  // namespace gantry::comm
