// ShmGroup: the stage protocol every shm algorithm is written in. Each rank owns a slot of
// `stages` stages in the segment; stage q (a number every rank advances identically) lives at
// q % stages. A rank may overwrite its stage q once every rank marked stage q - stages done;
// readers wait for the writer's `posted` (and `reduced`) counters. Waits spin briefly, then
// yield, then sleep in short naps; they give up at the op's deadline, when a peer process has
// exited (pidfd), when the local communicator is aborted, or when another rank poisoned the
// group (the shm analogue of a closed socket). Used by one lane per direction at a time.
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "comm/shm/shm_segment.h"
#include "comm/tcp/socket.h"
#include "comm/types.h"

namespace gantry::comm {

class ShmGroup {
 public:
  struct Op {
    std::string label;  // OpLabel::ToString()
    ShmOpMeta meta;
    Clock::time_point start;
    Deadline deadline;
  };

  ShmGroup(std::unique_ptr<ShmSegment> segment, int rank);
  ~ShmGroup();

  int rank() const { return rank_; }
  int size() const { return size_; }
  const ShmSegment& segment() const { return *segment_; }
  size_t chunk_bytes() const { return segment_->layout().result_bytes; }
  size_t stage_bytes() const { return segment_->layout().stage_bytes; }

  // Reserves `n` consecutive stage numbers for one collective (identical on every rank).
  uint64_t TakeStages(uint64_t n) {
    uint64_t q = next_stage_;
    next_stage_ += n;
    return q;
  }
  Status Acquire(const Op& op, uint64_t q);
  void Post(const Op& op, uint64_t q);
  Status WaitPosted(const Op& op, int peer, uint64_t q);
  // WaitPosted for every other rank.
  Status WaitAllPosted(const Op& op, uint64_t q);
  void MarkReduced(uint64_t q);
  Status WaitReduced(const Op& op, int peer, uint64_t q);
  void MarkDone(uint64_t q);
  // Waits until `peer` marked stage q done (it no longer reads this rank's data of stage q).
  Status WaitDone(const Op& op, int peer, uint64_t q);

  // SymmetricPeers signals (comm/communicator.h): this rank's slot, a peer's slot now, and a
  // bounded wait for a peer's slot to reach `value` (the same liveness checks as every wait).
  void Signal(int slot, uint64_t value);
  uint64_t PeekSignal(int peer, int slot) const;
  Status WaitSignal(const Op& op, int peer, int slot, uint64_t value, const char* what);

  // Point-to-point byte streams through the (from -> to) mailbox.
  Status MailboxWrite(const Op& op, int to, const void* data, size_t bytes);
  Status MailboxRead(const Op& op, int from, void* data, size_t bytes);

  // Errors call rank r "rank names[r]" (e.g. its global rank when this group is one host of
  // a larger job). Call before the first operation.
  void SetRankNames(std::vector<int> names) { names_ = std::move(names); }
  // "rank N" for group rank r, in the numbering chosen by SetRankNames.
  std::string RankName(int r) const;

  // Marks the group failed so every peer's waits end at once with `reason`. `cause` is the
  // code of what went wrong first (reason's own when it is not a wrapper such as an abort):
  // the peers report a mismatch (kFailedPrecondition) as one, anything else as kUnavailable.
  void Poison(const Status& reason) { Poison(reason, reason.code()); }
  void Poison(const Status& reason, StatusCode cause);
  // Local abort: this rank's waits end at once.
  void Abort() { aborted_.store(true); }

 private:
  Status WaitFor(const Op& op, int peer, const std::atomic<uint64_t>& counter, uint64_t target,
                 const char* what);
  Status CheckPeer(const Op& op, int peer);

  std::unique_ptr<ShmSegment> segment_;
  int rank_, size_;
  uint64_t next_stage_ = 0;
  std::atomic<bool> aborted_{false};
  std::vector<int> pidfds_;
  std::vector<bool> pid_watch_;  // false: the peer's pid is in another PID namespace
  std::vector<int> names_;  // empty: ranks are named by their index in the group  // -1 where pidfd_open is unavailable (then kill(pid, 0))
};

}  // namespace gantry::comm
