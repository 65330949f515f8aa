// Clock: the coordinator's source of time, so control-plane logic (heartbeats, deadlines,
// restarts) can be driven by a fake clock in tests. SystemClock is the real one.
#pragma once

#include <chrono>

namespace gantry::coordinator {

using SteadyTime = std::chrono::steady_clock::time_point;

class Clock {
 public:
  virtual ~Clock() = default;
  virtual SteadyTime Now() const = 0;
};

class SystemClock : public Clock {
 public:
  SteadyTime Now() const override { return std::chrono::steady_clock::now(); }
};

// Starts at an arbitrary point; moves only when told to.
class FakeClock : public Clock {
 public:
  SteadyTime Now() const override { return now_; }
  void Advance(std::chrono::milliseconds d) { now_ += d; }

 private:
  SteadyTime now_ = SteadyTime(std::chrono::hours(1));
};

}  // namespace gantry::coordinator
