// Lane: one progress thread that runs a communicator's operations in submission order, and
// WorkImpl, the completion handle it hands out. CommState is the "broken" flag shared by a
// communicator's lanes: after the first failure every queued and later op fails with it.
// Internal to comm backends (not part of the public interface).
#pragma once

#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "comm/communicator.h"

namespace gantry::comm {

class WorkImpl : public Work {
 public:
  void Complete(Status status);
  Status Wait(std::chrono::milliseconds timeout) override;
  bool Done() const override { return done_.load(std::memory_order_acquire); }

 private:
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::atomic<bool> done_{false};
  Status status_;
};
std::shared_ptr<WorkImpl> MakeDoneWork(Status status);

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
  void set_on_failure(std::function<void(const Status&)> fn) { on_failure_ = std::move(fn); }

 private:
  void Run();

  std::string name_;
  std::shared_ptr<CommState> state_;
  std::function<void(const Status&)> on_failure_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::pair<std::function<Status()>, std::shared_ptr<WorkImpl>>> queue_;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace gantry::comm
