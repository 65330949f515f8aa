// Lane: one progress thread that runs a communicator's operations in submission order, and
// WorkImpl, the completion handle it hands out. CommState is the "broken" flag shared by a
// communicator's lanes: after the first failure every queued and later op fails with it.
// Internal to comm backends (not part of the public interface).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <initializer_list>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "comm/communicator.h"

namespace gantry::comm {

// Waits spin (yielding the core) this long before blocking: a condvar wake costs 5-20 us on
// our VMs, more than a whole small collective. Bounded, so an idle lane costs nothing.
inline constexpr std::chrono::microseconds kLaneSpin{50};

class Lane;
struct LaneCore;

class WorkImpl : public Work {
 public:
  void Complete(Status status);
  Status Wait(std::chrono::milliseconds timeout) override;
  bool Done() const override { return done_.load(std::memory_order_acquire); }

 private:
  friend class Lane;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::atomic<bool> done_{false};
  Status status_;
  std::weak_ptr<LaneCore> lane_;  // set when queued on a lane that allows inline waits
};
std::shared_ptr<WorkImpl> MakeDoneWork(Status status);

// Why the ops of a communicator destroyed with some in flight fail (each backend's destructor
// aborts then, instead of waiting for them to end on their own, up to their deadline).
inline Status DestroyedInFlightError() {
  return CancelledError("the communicator was destroyed with operations in flight");
}

class CommState {
 public:
  bool failed() const { return failed_.load(std::memory_order_acquire); }
  Status error() const;
  // Records `status` if it is the first failure; returns true when it was.
  bool Fail(const Status& status);

 private:
  mutable std::mutex mu_;
  std::atomic<bool> failed_{false};
  Status error_;
};

// A lane's queue and state, shared with its WorkImpls (which may outlive the Lane).
struct LaneCore {
  std::string name;
  std::shared_ptr<CommState> state;
  std::function<void(const Status&)> on_failure;
  std::mutex mu;
  std::condition_variable cv;     // lane thread: new op or stop
  std::condition_variable idle_cv;  // destructor: inline runner finished
  std::deque<std::pair<std::function<Status()>, std::shared_ptr<WorkImpl>>> queue;
  std::atomic<size_t> queued{0};  // queue.size(), readable without mu while spinning
  bool stop = false;
  bool sleeping = false;  // lane thread blocked on cv (Submit notifies only then)
  bool running = false;   // an op is executing (on the lane thread or inline in a Wait)
  std::chrono::milliseconds inline_min_wait = std::chrono::milliseconds::max();

  // Runs one popped op (mu not held) and completes its Work; handles the first failure.
  void Execute(std::function<Status()>& fn, WorkImpl& work);
  // Called by WorkImpl::Wait: when `work` is next in line and nothing runs, executes it on
  // the waiting thread (saves two thread handoffs). Returns true when it ran it.
  bool TryRunInline(WorkImpl* work, std::chrono::milliseconds timeout);
};

class Lane {
 public:
  // on_first_failure runs once, on the lane thread or the aborting thread, right after the
  // communicator breaks (backends close their connections there so peers notice at once).
  Lane(std::string name, std::shared_ptr<CommState> state);
  ~Lane();
  Lane(const Lane&) = delete;
  Lane& operator=(const Lane&) = delete;

  // Queues `op`; its Status completes the returned Work. Fails at once when broken.
  WorkPtr Submit(std::function<Status()> op);
  // Called by the lane when an op fails and the state was healthy.
  void set_on_failure(std::function<void(const Status&)> fn) { core_->on_failure = std::move(fn); }
  // Lets Work::Wait(timeout) with timeout >= min_wait run the op on the waiting thread when
  // it is next in line and the lane is idle (ops then run on either thread, never two at
  // once). min_wait should be the op's own timeout, so a short Wait still returns in time.
  void set_inline_waits(std::chrono::milliseconds min_wait) { core_->inline_min_wait = min_wait; }
  // An op is running or queued (a communicator destroyed then aborts first: the running op
  // would otherwise hold the destructor until its deadline, e.g. on a stalled peer).
  bool Busy() const;
  // Whether any of `lanes` (null ones skipped) is Busy.
  static bool AnyBusy(std::initializer_list<const std::unique_ptr<Lane>*> lanes);

 private:
  void Run();

  std::shared_ptr<LaneCore> core_;
  std::thread thread_;
};

}  // namespace gantry::comm
