// ShmSegment: one POSIX shared-memory segment mapped by every rank of a host group, with
// per-rank progress counters (each on its own cache line), per-rank staging slots and one
// single-producer mailbox per ordered pair of ranks. Rank 0 creates it, publishes its name
// through the bootstrap store, and unlinks it once all ranks have mapped it (so nothing is
// left in /dev/shm even after a crash). Layout only; the protocol lives in shm_group.h.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string>

#include "comm/bootstrap/bootstrap.h"

namespace gantry::comm {

struct alignas(64) ShmCounter {
  std::atomic<uint64_t> value{0};
  char pad[64 - sizeof(std::atomic<uint64_t>)];
};

// What a ShmOpMeta's kind (and a ShmStepOf's) says a rank is running.
enum ShmKind : uint8_t {
  kShmNone = 0, kShmAllreduce, kShmBroadcast, kShmAllgather, kShmReduceScatter, kShmBarrier,
  kShmWindowAllocate, kShmAllreduceWindow
};
// "allreduce", "broadcast", ... ("collective 9" for a value outside ShmKind).
std::string ShmKindName(uint8_t kind);

// Set when a collective is one step of a larger one (hier: a host's part of a job-wide
// collective): that collective's kind, reduce op and root (a global rank). The host-mates
// must agree on it too: a hier avg runs its steps as sums and a hier broadcast from another
// host has local root 0, so the step's own arguments do not show what the caller asked for.
struct ShmStepOf {
  uint8_t kind = kShmNone, op = 0;
  int32_t root = -1;
  bool operator==(const ShmStepOf&) const = default;
};

// Describes the collective a rank is running; written next to each posted stage so that
// readers detect ranks that issued different collectives.
struct ShmOpMeta {
  uint64_t seq;
  uint64_t count;
  uint8_t kind, dtype, op, pad;
  int32_t root;
  // Collectives on symmetric memory (shm_window.h): the window and the byte offset in it,
  // which must be the same on every rank (-1 / 0 otherwise).
  int32_t window = -1;
  uint64_t offset = 0;
  ShmStepOf step_of;
  bool operator==(const ShmOpMeta&) const = default;
};
// "broadcast #3 (f32 x 1000, root 2)", and for a step of a larger collective
// " as a step of allreduce (avg)".
std::string DescribeShmOp(const ShmOpMeta& m);
// What differs between a peer's descriptor and this rank's: "root 2 there, 0 here".
std::string ShmOpDifferences(const ShmOpMeta& theirs, const ShmOpMeta& mine);

struct ShmRankControl {
  ShmCounter posted;   // stages this rank has written into its slot (absolute stage index + 1)
  ShmCounter reduced;  // stages whose result slice this rank has published
  ShmCounter done;     // stages this rank has finished reading
  ShmCounter signal[4];  // SymmetricPeers signals (comm/communicator.h), owned by this rank
  alignas(64) std::atomic<int32_t> pid;
  // Its PID namespace (inode of /proc/self/ns/pid; 0 unknown): a pid means nothing to a peer
  // in another namespace (containers sharing /dev/shm), which then cannot watch it by pid.
  std::atomic<uint64_t> pidns;
};

// Inode of this process's PID namespace, or 0 when it cannot be read.
uint64_t PidNamespaceId();

struct ShmHeader {
  uint64_t magic;
  std::atomic<int32_t> failed_rank;  // -1 healthy; else the rank that broke the group
  char failure[1024];                // its reason (written before failed_rank is set)
  int32_t failure_cause;             // StatusCode of what broke it (written before failed_rank)
  char name[64];                     // the segment's shm name (symmetric windows derive theirs)
};

struct ShmMailbox {
  ShmCounter head;  // bytes written by the sender (total)
  ShmCounter tail;  // bytes consumed by the receiver (total)
  // followed by `mailbox_bytes` of ring data
};

class ShmSegment {
 public:
  struct Layout {
    int ranks;
    int stages;
    size_t stage_bytes;  // per rank per stage: input area
    size_t result_bytes; // per rank per stage: result area
    size_t mailbox_bytes;
  };
  // Collective over the bootstrap's ranks (all must be on this host).
  static StatusOr<std::unique_ptr<ShmSegment>> Create(Bootstrap& bootstrap, const Layout& layout,
                                                      std::chrono::milliseconds timeout);
  ~ShmSegment();

  const Layout& layout() const { return layout_; }
  // The name rank 0 created the segment under (unlinked once every rank mapped it).
  std::string name() const { return header()->name; }
  ShmHeader* header() const { return reinterpret_cast<ShmHeader*>(base_); }
  ShmRankControl* control(int rank) const;
  // Stage q of `rank`: metadata, input area, result area.
  ShmOpMeta* meta(int rank, uint64_t q) const;
  char* input(int rank, uint64_t q) const;
  char* result(int rank, uint64_t q) const;
  ShmMailbox* mailbox(int from, int to) const;
  char* mailbox_data(int from, int to) const;

 private:
  ShmSegment(const Layout& layout, size_t bytes);
  size_t SlotBytes() const;
  Layout layout_;
  size_t bytes_;
  char* base_ = nullptr;
  size_t control_off_, slots_off_, mailbox_off_;
};

}  // namespace gantry::comm
