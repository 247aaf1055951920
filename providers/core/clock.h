#pragma once
// The injected clock: reconcile code asks it for the time so tests can fix it.

#include <chrono>
#include <cstdint>

namespace pim {

class Clock {
 public:
  virtual ~Clock() = default;
  /// Current time in Unix seconds (UTC).
  virtual int64_t nowSeconds() const = 0;
  /// Current time in Unix milliseconds (UTC), for timers aimed at a given second; by default the
  /// start of nowSeconds()'s second.
  virtual int64_t nowMilliseconds() const { return nowSeconds() * 1000; }
};

class SystemClock : public Clock {
 public:
  int64_t nowSeconds() const override {
    return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch())
        .count();
  }
  int64_t nowMilliseconds() const override {
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
        .count();
  }
};

class FixedClock : public Clock {
 public:
  explicit FixedClock(int64_t now) : now_(now) {}
  int64_t nowSeconds() const override { return now_; }
  void set(int64_t now) { now_ = now; }

 private:
  int64_t now_;
};

}  // namespace pim
