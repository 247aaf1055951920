#include "agent/daemon/backoff.h"

#include <climits>
#include <cmath>
#include <cstdint>
#include <memory>
#include <random>
#include <stdexcept>

namespace pim {

constexpr std::chrono::milliseconds Backoff::kDefaultCap;

Backoff::Backoff(std::chrono::milliseconds base, std::chrono::milliseconds cap, std::function<double()> random01)
    : base_(base), cap_(cap), random01_(std::move(random01)) {
  if (base_.count() <= 0) throw std::invalid_argument("Backoff: base must be > 0");
  if (cap_.count() < 0) throw std::invalid_argument("Backoff: cap must be >= 0");
  if (!random01_) {
    auto engine = std::make_shared<std::mt19937_64>(std::random_device{}());
    random01_ = [engine]() { return std::uniform_real_distribution<double>(0.0, 1.0)(*engine); };
  }
}

std::chrono::milliseconds Backoff::ceiling() const {
  const int64_t base = base_.count();
  const int64_t cap = cap_.count();
  // For integers, base * 2^n <= cap  <=>  base <= floor(cap / 2^n) = cap >> n. Shifting the cap
  // down instead of the base up cannot overflow.
  if (failures_ >= 63 || base > (cap >> failures_)) return cap_;
  return std::chrono::milliseconds(base << failures_);
}

std::chrono::milliseconds Backoff::nextDelay() {
  const int64_t limit = ceiling().count();
  double r = random01_();
  if (!(r >= 0.0)) r = 0.0;  // also maps NaN to 0
  if (r > 1.0) r = 1.0;
  int64_t delay = static_cast<int64_t>(std::llround(r * static_cast<double>(limit)));
  if (delay > limit) delay = limit;
  if (delay < 0) delay = 0;
  if (failures_ < INT_MAX) ++failures_;
  return std::chrono::milliseconds(delay);
}

void Backoff::reset() { failures_ = 0; }

int Backoff::failures() const { return failures_; }

}  // namespace pim
