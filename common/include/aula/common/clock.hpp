// Time, injected: code that expires, rate-limits or times out takes a Clock&
// so tests can move time by hand.
#pragma once

#include <atomic>
#include <chrono>

namespace aula {

class Clock {
 public:
  using TimePoint = std::chrono::system_clock::time_point;
  virtual ~Clock() = default;
  virtual TimePoint now() const = 0;
};

class SystemClock final : public Clock {
 public:
  TimePoint now() const override { return std::chrono::system_clock::now(); }
  static SystemClock& instance() {
    static SystemClock clock;
    return clock;
  }
};

class ManualClock final : public Clock {
 public:
  explicit ManualClock(TimePoint start = std::chrono::system_clock::now())
      : now_(start.time_since_epoch().count()) {}
  TimePoint now() const override { return TimePoint(TimePoint::duration(now_.load())); }
  void advance(std::chrono::system_clock::duration by) { now_ += by.count(); }
  void set(TimePoint to) { now_ = to.time_since_epoch().count(); }

 private:
  std::atomic<TimePoint::duration::rep> now_;
};

}  // namespace aula
