// Lane and WorkImpl: FIFO execution of communicator operations on a progress thread (or, for
// a Wait on the next op of an idle lane, on the waiting thread).
#include "comm/lane.h"

#include <sched.h>

namespace gantry::comm {

void WorkImpl::Complete(Status status) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    status_ = std::move(status);
    done_.store(true, std::memory_order_release);
  }
  cv_.notify_all();
}

Status WorkImpl::Wait(std::chrono::milliseconds timeout) {
  if (!done_.load(std::memory_order_acquire)) {
    if (auto core = lane_.lock()) core->TryRunInline(this, timeout);
  }
  // Small ops finish within microseconds: spin first, yielding so the lane thread (which may
  // share this core) runs the op, and block only when it takes longer.
  const auto spin_until = std::chrono::steady_clock::now() + kLaneSpin;
  while (!done_.load(std::memory_order_acquire) && std::chrono::steady_clock::now() < spin_until) {
    sched_yield();
  }
  std::unique_lock<std::mutex> lock(mu_);
  if (!cv_.wait_for(lock, timeout, [&] { return done_.load(std::memory_order_acquire); })) {
    return DeadlineExceededError("Work::Wait: operation still running after " +
                                 std::to_string(timeout.count()) +
                                 " ms; wait longer or check the peers");
  }
  return status_;
}

std::shared_ptr<WorkImpl> MakeDoneWork(Status status) {
  auto w = std::make_shared<WorkImpl>();
  w->Complete(std::move(status));
  return w;
}

Status CommState::error() const {
  std::lock_guard<std::mutex> lock(mu_);
  return error_;
}

bool CommState::Fail(const Status& status) {
  std::lock_guard<std::mutex> lock(mu_);
  if (failed_.load()) return false;
  error_ = status;
  failed_.store(true, std::memory_order_release);
  return true;
}

void LaneCore::Execute(std::function<Status()>& fn, WorkImpl& work) {
  if (state->failed()) {
    work.Complete(state->error());
    return;
  }
  Status s = fn();
  if (!s.ok()) {
    // The first failure breaks the communicator; a failure caused by that break (sockets
    // shut down by Abort) reports the root cause instead of its symptom.
    if (state->Fail(s)) {
      if (on_failure) on_failure(s);
    } else {
      s = state->error();
    }
  }
  work.Complete(std::move(s));
}

bool LaneCore::TryRunInline(WorkImpl* work, std::chrono::milliseconds timeout) {
  std::function<Status()> fn;
  std::shared_ptr<WorkImpl> held;
  {
    std::lock_guard<std::mutex> lock(mu);
    if (timeout < inline_min_wait || stop || running || queue.empty() ||
        queue.front().second.get() != work) {
      return false;
    }
    fn = std::move(queue.front().first);
    held = std::move(queue.front().second);
    queue.pop_front();
    queued.store(queue.size(), std::memory_order_release);
    running = true;
  }
  Execute(fn, *held);
  {
    std::lock_guard<std::mutex> lock(mu);
    running = false;
    // Ops queued meanwhile belong to the lane thread; it may be asleep.
    if (sleeping && !queue.empty()) cv.notify_one();
  }
  idle_cv.notify_all();
  return true;
}

Lane::Lane(std::string name, std::shared_ptr<CommState> state)
    : core_(std::make_shared<LaneCore>()) {
  core_->name = std::move(name);
  core_->state = std::move(state);
  thread_ = std::thread([this] { Run(); });
}

Lane::~Lane() {
  LaneCore& c = *core_;
  {
    std::lock_guard<std::mutex> lock(c.mu);
    c.stop = true;
  }
  c.cv.notify_all();
  thread_.join();
  std::unique_lock<std::mutex> lock(c.mu);
  c.idle_cv.wait(lock, [&] { return !c.running; });  // an inline Wait may still be running one
  for (auto& [fn, work] : c.queue) {
    work->Complete(CancelledError(c.name + ": communicator destroyed before the op ran"));
  }
  c.queue.clear();
  c.queued.store(0);
}

bool Lane::Busy() const {
  std::lock_guard<std::mutex> lock(core_->mu);
  return core_->running || !core_->queue.empty();
}

bool Lane::AnyBusy(std::initializer_list<const std::unique_ptr<Lane>*> lanes) {
  for (const auto* lane : lanes) {
    if (*lane && (*lane)->Busy()) return true;
  }
  return false;
}

WorkPtr Lane::Submit(std::function<Status()> op) {
  LaneCore& c = *core_;
  auto work = std::make_shared<WorkImpl>();
  if (c.state->failed()) {
    work->Complete(c.state->error());
    return work;
  }
  {
    std::lock_guard<std::mutex> lock(c.mu);
    if (c.inline_min_wait != std::chrono::milliseconds::max()) work->lane_ = core_;
    c.queue.emplace_back(std::move(op), work);
    c.queued.store(c.queue.size(), std::memory_order_release);
    if (!c.sleeping) return work;  // the lane thread is busy or spinning: it will see the op
  }
  c.cv.notify_one();
  return work;
}

void Lane::Run() {
  LaneCore& c = *core_;
  for (;;) {
    std::function<Status()> fn;
    std::shared_ptr<WorkImpl> work;
    // Spin briefly (yielding the core) for the next op before blocking on the condvar.
    const auto spin_until = std::chrono::steady_clock::now() + kLaneSpin;
    while (c.queued.load(std::memory_order_acquire) == 0 &&
           std::chrono::steady_clock::now() < spin_until) {
      sched_yield();
    }
    {
      std::unique_lock<std::mutex> lock(c.mu);
      c.sleeping = true;
      c.cv.wait(lock, [&] { return c.stop || (!c.queue.empty() && !c.running); });
      c.sleeping = false;
      if (c.stop) return;
      fn = std::move(c.queue.front().first);
      work = std::move(c.queue.front().second);
      c.queue.pop_front();
      c.queued.store(c.queue.size(), std::memory_order_release);
      c.running = true;
    }
    c.Execute(fn, *work);
    std::lock_guard<std::mutex> lock(c.mu);
    c.running = false;
  }
}

}  // namespace gantry::comm
