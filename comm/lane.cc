// Lane and WorkImpl: FIFO execution of communicator operations on a progress thread.
#include "comm/lane.h"

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

Lane::Lane(std::string name, std::shared_ptr<CommState> state)
    : name_(std::move(name)), state_(std::move(state)) {
  thread_ = std::thread([this] { Run(); });
}

Lane::~Lane() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
  for (auto& [fn, work] : queue_) {
    work->Complete(CancelledError(name_ + ": communicator destroyed before the op ran"));
  }
}

WorkPtr Lane::Submit(std::function<Status()> op) {
  auto work = std::make_shared<WorkImpl>();
  if (state_->failed()) {
    work->Complete(state_->error());
    return work;
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    queue_.emplace_back(std::move(op), work);
  }
  cv_.notify_one();
  return work;
}

void Lane::Run() {
  for (;;) {
    std::function<Status()> fn;
    std::shared_ptr<WorkImpl> work;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return stop_ || !queue_.empty(); });
      if (stop_) return;
      fn = std::move(queue_.front().first);
      work = std::move(queue_.front().second);
      queue_.pop_front();
    }
    if (state_->failed()) {
      work->Complete(state_->error());
      continue;
    }
    Status s = fn();
    if (!s.ok()) {
      // The first failure breaks the communicator; a failure caused by that break (sockets
      // shut down by Abort) reports the root cause instead of its symptom.
      if (state_->Fail(s)) {
        if (on_failure_) on_failure_(s);
      } else {
        s = state_->error();
      }
    }
    work->Complete(std::move(s));
  }
}

}  // namespace gantry::comm
