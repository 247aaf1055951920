#pragma once
// Retry delays for the poll loop: exponential back-off with full jitter ("AWS full jitter").
// After the n-th consecutive failure (n = 0 for the first) the delay is uniform in
// [0, min(cap, base * 2^n)]; a success resets the count. Pure: the random source is injected.

#include <chrono>
#include <functional>

namespace pim {

class Backoff {
 public:
  static constexpr std::chrono::milliseconds kDefaultCap{10 * 60 * 1000};

  /// base: the first ceiling (the poll interval); cap: the largest delay ever returned;
  /// random01: returns a number in [0, 1] (values outside are clamped); empty = a seeded
  /// std::mt19937_64. Throws std::invalid_argument when base <= 0 or cap < 0 (programming error).
  explicit Backoff(std::chrono::milliseconds base, std::chrono::milliseconds cap = kDefaultCap,
                   std::function<double()> random01 = {});

  /// The delay to wait before the next attempt after a failure: uniform in
  /// [0, ceiling()], then counts one more failure. Never exceeds cap, never overflows.
  std::chrono::milliseconds nextDelay();
  /// The current ceiling min(cap, base * 2^failures()), without drawing or counting.
  std::chrono::milliseconds ceiling() const;
  /// Forgets the failures (call after a successful poll).
  void reset();
  /// Consecutive failures counted since construction or the last reset (saturates at INT_MAX).
  int failures() const;

 private:
  std::chrono::milliseconds base_;
  std::chrono::milliseconds cap_;
  std::function<double()> random01_;
  int failures_ = 0;
};

}  // namespace pim
