// ShmWindows: symmetric memory for the shm backend. Window k is one POSIX shared-memory object
// per rank, of the same size on every rank, mapped by every rank of the group; a rank hands its
// own mapping to the caller (e.g. the flat gradient buffer) and reads its peers' directly, so a
// collective on a buffer inside a window needs no staging copies (shm_allreduce_window.cc).
// Objects are unlinked as soon as every rank mapped them (nothing is left in /dev/shm after a
// crash). Not thread-safe: Allocate runs on the collective lane, Find on the issuing thread
// before the op is queued, and windows are never removed while the communicator lives.
#pragma once

#include <cstddef>
#include <memory>
#include <mutex>
#include <optional>
#include <vector>

#include "comm/shm/shm_group.h"

namespace gantry::comm {

class ShmWindows {
 public:
  struct Where {
    int window;     // index of the window
    size_t offset;  // byte offset of the buffer in it
  };

  ShmWindows() = default;
  ~ShmWindows();
  ShmWindows(const ShmWindows&) = delete;
  ShmWindows& operator=(const ShmWindows&) = delete;

  // Collective (every rank of `g`, same bytes, inside one collective op): maps a new window.
  // Returns this rank's memory (zero-filled; unmapped when the last owner lets go: the
  // communicator and whoever holds the result), or a null pointer when any rank could not
  // create its part (e.g. /dev/shm too small): then every rank falls back alike.
  StatusOr<std::shared_ptr<void>> Allocate(ShmGroup& g, const ShmGroup::Op& op, size_t bytes);

  // The window holding [p, p + bytes) on this rank, or nullopt.
  std::optional<Where> Find(const void* p, size_t bytes) const;
  // Rank r's mapping of window w (this rank's own too).
  char* base(int w, int r) const { return windows_[w].bases[r]; }

 private:
  struct Window {
    size_t bytes = 0;
    std::shared_ptr<void> own;   // this rank's mapping (shared with the caller)
    std::vector<char*> bases;    // every rank's mapping, own included
  };
  mutable std::mutex mu_;  // Allocate (lane) vs Find (issuing thread)
  std::vector<Window> windows_;
};

}  // namespace gantry::comm
